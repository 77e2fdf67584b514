"""The `metaagent` command: run the mesh, one component, certificates, tokens and status."""
