"""Context service: sessions, turns, tenants (and, later, consents, audit and the outbox)."""
