"""Bulk import of subjects: parse and validate rows (`rows`), store a batch set-based
through COPY into staging tables (`staging`), batch, resume and report (`runner`)."""
