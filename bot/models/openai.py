"""`OpenAIChatModel`: Chat Completions with function tools, on OpenAI or any compatible server.

The only module that imports `openai`. The client's own retries handle 408/409/429/5xx with
backoff; what still fails becomes a `ModelError` whose message holds no secret.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import openai

from bot.models.base import ChatMessage, ModelError, ModelReply, ModelRequest, ToolCall, Usage
from bot.settings import Settings

log = logging.getLogger(__name__)

# Servers like Ollama need no key, but the client insists on one.
_PLACEHOLDER_KEY = "not-needed"


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAIChatModel:
    """A `ChatModel` on `openai.AsyncOpenAI` (Chat Completions API)."""

    client: openai.AsyncOpenAI
    model: str
    temperature: float | None = None
    parallel_tool_calls: bool | None = False
    tool_choice: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIChatModel:
        """Build the client from `OPENAI_*` settings."""
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        client = openai.AsyncOpenAI(
            api_key=key or _PLACEHOLDER_KEY,
            base_url=settings.openai_base_url or None,
            timeout=settings.openai_timeout,
            max_retries=settings.openai_max_retries,
        )
        return cls(
            client=client,
            model=settings.openai_model,
            temperature=settings.openai_temperature,
            parallel_tool_calls=settings.openai_parallel_tool_calls,
            tool_choice=settings.openai_tool_choice,
        )

    async def aclose(self) -> None:
        """Close the HTTP client's connections."""
        await self.client.close()

    async def complete(self, request: ModelRequest) -> ModelReply:
        """One Chat Completions call; errors become `ModelError`."""
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [_message(message) for message in request.messages],
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                }
                for tool in request.tools
            ]
            if self.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = self.parallel_tool_calls
            if self.tool_choice is not None:
                body["tool_choice"] = self.tool_choice
        try:
            completion = await self.client.chat.completions.create(**body)
        except openai.APIStatusError as exc:
            raise ModelError(f"the model server answered HTTP {exc.status_code}") from exc
        except openai.APITimeoutError as exc:
            raise ModelError("the model server did not answer in time") from exc
        except openai.APIConnectionError as exc:
            raise ModelError("cannot connect to the model server") from exc
        except openai.OpenAIError as exc:
            raise ModelError(f"the model call failed ({type(exc).__name__})") from exc
        return _reply(completion)


def _message(message: ChatMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.name:
        data["name"] = message.name
    if message.tool_calls:
        data["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    return data


def _reply(completion: Any) -> ModelReply:
    if not completion.choices:
        raise ModelError("the model server returned no choices")
    choice = completion.choices[0]
    message = choice.message
    text = message.content or getattr(message, "refusal", None) or None
    calls = tuple(
        ToolCall(call.id or f"call_{index}", call.function.name, call.function.arguments or "{}")
        for index, call in enumerate(message.tool_calls or ())
        if getattr(call, "function", None) is not None
    )
    usage = None
    if completion.usage is not None:
        usage = Usage(completion.usage.prompt_tokens or 0, completion.usage.completion_tokens or 0)
    if choice.finish_reason == "length" and not calls:
        log.warning("model reply cut at the token limit")
        text = (text or "").rstrip() + " …(reply cut short at the model's length limit)"
    return ModelReply(
        text=text,
        tool_calls=calls,
        finish_reason=choice.finish_reason or "stop",
        usage=usage,
        model=completion.model or None,
    )
