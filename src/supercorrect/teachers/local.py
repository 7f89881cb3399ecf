"""A local Hugging Face model as teacher: chat turns go through a generation backend (greedy)."""

from __future__ import annotations

from ..generation import Backend, SamplingSettings


class LocalChat:
    """`chat_many` over a local model, with the same result type as the OpenAI-compatible client."""

    def __init__(self, backend: Backend, tokenizer, max_new_tokens: int = 1024):
        self.backend = backend
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def chat_many(self, conversations: list[list[dict]], desc: str = "teacher") -> list:
        from .openai_chat import ChatResult

        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        gens = self.backend.generate(prompts, SamplingSettings(max_new_tokens=self.max_new_tokens), desc=desc)
        results = []
        for prompt, (g,) in zip(prompts, gens, strict=True):
            n_prompt = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            self.prompt_tokens += n_prompt
            self.completion_tokens += g.n_tokens
            results.append(
                ChatResult(
                    text=g.text,
                    finish_reason="length" if g.finish == "length" else "stop",
                    prompt_tokens=n_prompt,
                    completion_tokens=g.n_tokens,
                )
            )
        return results

    def usage(self) -> dict:
        return {"requests_sent": 0, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
