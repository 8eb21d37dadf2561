"""Dictation: the composer's recorded audio to text, through the endpoint's transcription API.

The same `openai` client as the chat model, so a self-hosted endpoint that serves
`/v1/audio/transcriptions` works as OpenAI does. Failures are 4xx/5xx `RequestError`s
the HTTP layer answers as JSON: the client's mistakes 4xx, the upstream's 502/503.
"""

from __future__ import annotations

import base64
import binascii
import logging

import openai
from chatkit.types import AudioInput, TranscriptionResult

from .protocol import RequestError

logger = logging.getLogger("tripchat.dictation")

MAX_AUDIO_BYTES = 25 * 1024 * 1024
"""OpenAI's own limit per file; a request body limit (CHATKIT_MAX_BODY_BYTES) applies first."""
AUDIO_EXTENSIONS = {
    "audio/webm": "webm",
    "audio/ogg": "ogg",
    "audio/mp4": "mp4",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/flac": "flac",
}
"""What browsers' MediaRecorder produces, named as the transcription API expects."""


def decode_audio(audio_base64: str, mime_type: str) -> AudioInput:
    """The request's audio, checked: base64, a known type, not empty, not too large."""
    if len(audio_base64) > MAX_AUDIO_BYTES * 4 // 3 + 4:
        raise RequestError(413, f"audio is larger than {MAX_AUDIO_BYTES} bytes")
    try:
        data = base64.b64decode(audio_base64, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "audio_base64 is not valid base64") from None
    audio = AudioInput(data=data, mime_type=mime_type)
    if audio.media_type.strip().lower() not in AUDIO_EXTENSIONS:
        raise RequestError(
            415,
            f"audio type {audio.media_type[:60]!r} is not supported; use webm, ogg, mp4, "
            "mpeg, wav or flac",
        )
    if not data:
        raise RequestError(400, "the audio is empty")
    return audio


class Dictation:
    """Transcribes with `model` on `client`'s endpoint."""

    def __init__(self, client: openai.AsyncOpenAI, model: str) -> None:
        self.client = client
        self.model = model

    async def transcribe(self, audio: AudioInput) -> TranscriptionResult:
        """The audio's text; an upstream failure is a 502 (it answered badly) or 503 (it
        could not answer: unreachable, timed out, rate limited), never a 500."""
        media_type = audio.media_type.strip().lower()
        name = f"dictation.{AUDIO_EXTENSIONS[media_type]}"
        try:
            result = await self.client.audio.transcriptions.create(
                model=self.model, file=(name, audio.data, media_type)
            )
        except (openai.APIConnectionError, openai.RateLimitError) as exc:
            # APITimeoutError is an APIConnectionError.
            logger.warning("transcription unavailable: %r", exc)
            raise RequestError(503, "dictation is unavailable right now; try again") from None
        except openai.APIError as exc:
            logger.warning("transcription failed: %r", exc)
            raise RequestError(502, "the transcription service failed to answer") from None
        return TranscriptionResult(text=result.text.strip())
