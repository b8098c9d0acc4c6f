"""Ask Luca through LiteLLM's client: run by the LiteLLM venv's python, a JSON request on stdin, JSON out.

stdin: {"api_base", "api_key", "model", "messages", "stream"}; stdout: {"content", "model", "usage"}.
"""
import json
import sys

import litellm


def main() -> None:
    """Send one completion through litellm.completion() and print what came back."""
    args = json.load(sys.stdin)
    litellm.telemetry = False
    request = {"model": args["model"], "api_base": args["api_base"], "api_key": args["api_key"],
               "messages": args["messages"], "num_retries": 0}
    if args.get("stream"):
        parts, usage, model = [], None, None
        for chunk in litellm.completion(**request, stream=True, stream_options={"include_usage": True}):
            model = chunk.model or model
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if getattr(chunk, "usage", None):
                usage = chunk.usage.model_dump()
        print(json.dumps({"content": "".join(parts), "model": model, "usage": usage}))
        return
    response = litellm.completion(**request)
    print(json.dumps({"content": response.choices[0].message.content, "model": response.model,
                      "usage": response.usage.model_dump() if response.usage else None}))


if __name__ == "__main__":
    main()
