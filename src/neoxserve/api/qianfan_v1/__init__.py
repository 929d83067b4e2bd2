"""Qianfan's v1 protocol: the model routes under `/rpc/2.0/ai_custom/v1/wenxinworkshop/` (their body parser, sentence
chunks and answers), the OAuth token and IAM bearer-token routes, and the console API the qianfan SDK reads
(docs/api.md). The steps every model route shares are api/model_call.py's."""
