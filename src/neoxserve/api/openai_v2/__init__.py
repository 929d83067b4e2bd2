"""OpenAI's protocol and Qianfan v2's, which shares its shapes: `/v1/models`, `/v1/completions`,
`/v1/chat/completions` and `/v2/chat/completions` (their body parsers, answers, logprobs and OpenAPI documentation;
docs/api.md, "OpenAI routes and Qianfan v2"). The steps every model route shares are api/model_call.py's."""
