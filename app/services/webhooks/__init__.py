"""Webhooks out: endpoints and their secrets, the delivery outbox the change-feed sequencer
fills, the SSRF rules of every call, and the worker that sends, signs and retries."""
