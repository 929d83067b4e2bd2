"""What runs in the engine process only: the engine core, scheduler, block manager, KV sizing, model runner,
sampler, detokenizer and the process loop (loop.py). The HTTP process imports nothing from this package (it loads
torch); what both processes use sits beside it in engine/: the protocol, the plain data, the config."""
