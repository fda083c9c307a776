"""`gguf-runtime serve`: the HTTP server (server.py), its OpenAI request checks and
response shapes (openai_api.py) and the continuous-batching engine (engine.py)."""
