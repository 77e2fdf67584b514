"""Offline text-to-speech with espeak-ng, when it is installed."""

import asyncio
import shutil

from services.mesh.errors import failed_precondition


class EspeakSynthesizer:
    """Runs `espeak-ng --stdout` and returns the WAV it writes (22.05 kHz mono PCM)."""

    sample_rate_hz = 22050

    def __init__(self, binary: str) -> None:
        self._binary = binary

    def available(self) -> bool:
        return shutil.which(self._binary) is not None

    async def synthesize(self, text: str, language: str) -> bytes:
        path = shutil.which(self._binary)
        if path is None:
            raise failed_precondition(
                "no offline TTS engine: install espeak-ng or configure Azure Speech",
                "TTS_ENGINE_MISSING",
            )
        process = await asyncio.create_subprocess_exec(
            path,
            "--stdout",
            "-v",
            language or "en",
            "--",
            text,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        audio, errors = await process.communicate()
        if process.returncode != 0:
            raise failed_precondition(
                f"espeak-ng failed: {errors.decode(errors='replace')[:200]}", "TTS_FAILED"
            )
        return audio
