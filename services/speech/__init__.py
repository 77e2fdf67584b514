"""Speech service: STT, TTS and voice sessions (this increment: offline synthesis)."""
