"""E-mail the service sends itself (double opt-in, confirming a rights request): the outbox,
the messages, and the background sender."""
