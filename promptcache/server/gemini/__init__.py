"""The Gemini dialect: cachedContents and models/{model}:generateContent, on the same retention
mechanism as sessions (server/retention.py)."""
