"""Who may call what: API.md's role table, one entry per (method, path template).

`tests/test_access_matrix.py` walks the app's routes at run time and calls every one with
every role's key and with none. A route missing here fails that test: add a line below.
HEAD follows GET. Write each entry from API.md's "Roles" table, not from the code.
"""

PUBLIC = "public"  # no key needed (API.md: /healthz, /readyz, docs, public keys, /u/, /p/)
# No API key either, but a credential of its own: the MailChimp webhook's `secret` query
# parameter (API.md), the auditor's signed link, the sign-in form's CSRF token. Without it
# the answer is 401 or 403, and an API key changes nothing.
OWN_CREDENTIAL = "own credential"

CRM, WEBSITE, SYNC, AUDITOR, ADMIN = "crm", "website", "sync", "auditor", "admin"
EVERY_ROLE = frozenset({CRM, WEBSITE, SYNC, AUDITOR, ADMIN})
READERS = frozenset({AUDITOR, ADMIN})  # "read everything (every GET)"
CRM_READ = READERS | {CRM}  # crm's own data, readable by auditors and admins

Rule = frozenset[str] | str

ACCESS: dict[tuple[str, str], Rule] = {
    # Operations and docs
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/metrics"): READERS,
    # Catalogues: read every role, write admin
    ("GET", "/v1/purposes"): EVERY_ROLE,
    ("PUT", "/v1/purposes/{key}"): frozenset({ADMIN}),
    ("GET", "/v1/recipients"): EVERY_ROLE,
    ("PUT", "/v1/recipients/{key}"): frozenset({ADMIN}),
    ("GET", "/v1/categories"): EVERY_ROLE,
    ("GET", "/v1/sources"): EVERY_ROLE,
    ("GET", "/v1/policies"): EVERY_ROLE,
    ("POST", "/v1/policies"): frozenset({ADMIN}),
    # The controller's identity: a catalogue (API.md lists it there), so every role reads
    ("GET", "/v1/controller"): EVERY_ROLE,
    ("PUT", "/v1/controller"): frozenset({ADMIN}),
    # Subjects and lawful bases: crm; the website never lists subjects
    ("POST", "/v1/subjects"): frozenset({CRM}),
    ("POST", "/v1/subjects/import"): frozenset({CRM}),  # API.md "Bulk (crm)"
    ("GET", "/v1/subjects"): CRM_READ,
    ("GET", "/v1/subjects/{subject_id}"): CRM_READ,
    ("PATCH", "/v1/subjects/{subject_id}"): frozenset({CRM}),
    ("POST", "/v1/subjects/{subject_id}/merge"): frozenset({CRM}),
    ("GET", "/v1/subjects/{subject_id}/bases"): CRM_READ,
    ("PUT", "/v1/subjects/{subject_id}/bases/{purpose}"): frozenset({CRM}),
    ("GET", "/v1/subjects/{subject_id}/bases/{purpose}/history"): CRM_READ,
    ("DELETE", "/v1/subjects/{subject_id}/bases/{purpose}"): frozenset({CRM}),
    # Consent: crm and website record; reading is crm's and the readers'
    ("POST", "/v1/consent-events"): frozenset({CRM, WEBSITE}),
    ("GET", "/v1/consent-events"): CRM_READ,
    ("GET", "/v1/subjects/{subject_id}/consents"): CRM_READ,
    ("GET", "/v1/consent-events/{event_id}/receipt"): CRM_READ,
    ("GET", "/v1/consent-events/{event_id}/record"): CRM_READ,  # like the receipt
    # Opt-outs: crm, website, sync record and check
    ("POST", "/v1/opt-outs"): frozenset({CRM, WEBSITE, SYNC}),
    ("GET", "/v1/opt-outs/check"): EVERY_ROLE,
    # Decisions: crm, website, sync ask; the stored decisions are read by crm and readers
    ("POST", "/v1/decisions"): frozenset({CRM, WEBSITE, SYNC}),
    ("POST", "/v1/decisions/batch"): frozenset({CRM, WEBSITE, SYNC}),
    ("GET", "/v1/decisions"): CRM_READ,
    # Rights requests: crm all actions; the website may create
    ("POST", "/v1/rights-requests"): frozenset({CRM, WEBSITE}),
    ("GET", "/v1/rights-requests"): CRM_READ,
    ("GET", "/v1/rights-requests/{request_id}"): CRM_READ,
    ("POST", "/v1/rights-requests/{request_id}/verify-identity"): frozenset({CRM}),
    ("POST", "/v1/rights-requests/{request_id}/extend"): frozenset({CRM}),
    ("POST", "/v1/rights-requests/{request_id}/complete"): frozenset({CRM}),
    ("POST", "/v1/rights-requests/{request_id}/reject"): frozenset({CRM}),
    ("GET", "/v1/rights-requests/{request_id}/export"): CRM_READ,
    ("DELETE", "/v1/subjects/{subject_id}/restriction"): frozenset({CRM}),
    ("GET", "/v1/reports/rights-requests"): READERS,
    ("POST", "/v1/rights-requests/{request_id}/pause"): frozenset({CRM}),
    ("POST", "/v1/rights-requests/{request_id}/resume"): frozenset({CRM}),
    # Sync: audiences for sync (and the crm, issue 10); the webhook carries its own secret
    ("GET", "/v1/changes"): READERS | {SYNC},
    ("GET", "/v1/audiences/{purpose}"): READERS | {SYNC, CRM},
    ("GET", "/v1/sync/mailchimp-events"): CRM_READ,
    ("GET", "/v1/sync/failures"): READERS | {SYNC},
    ("GET", "/v1/webhooks/mailchimp"): OWN_CREDENTIAL,
    ("POST", "/v1/webhooks/mailchimp"): OWN_CREDENTIAL,
    # Webhooks out: admin sets them up; the readers see them (never a secret)
    ("PUT", "/v1/webhook-endpoints/{key}"): frozenset({ADMIN}),
    ("GET", "/v1/webhook-endpoints"): READERS,
    ("DELETE", "/v1/webhook-endpoints/{key}"): frozenset({ADMIN}),
    ("POST", "/v1/webhook-endpoints/{key}/rotate-secret"): frozenset({ADMIN}),
    ("GET", "/v1/webhook-endpoints/{key}/deliveries"): READERS,
    ("POST", "/v1/webhook-endpoints/{key}/deliveries/{delivery_id}/retry"): frozenset({ADMIN}),
    # Bulk consent records (issue 13): crm and auditors
    ("GET", "/v1/consent-events/export"): CRM_READ,
    ("GET", "/v1/reports/reconsent"): CRM_READ,
    ("GET", "/v1/reports/consent-refresh"): CRM_READ,  # API.md: crm, auditor (admin reads all)
    # The person's own door: links for crm and sync; the pages take a signed token instead
    ("POST", "/v1/subjects/{subject_id}/links"): frozenset({CRM, SYNC}),
    ("GET", "/u/{token}"): PUBLIC,
    ("POST", "/u/{token}"): PUBLIC,
    ("GET", "/p/{token}"): PUBLIC,
    ("GET", "/c/{token}"): PUBLIC,
    ("POST", "/c/{token}"): PUBLIC,
    ("GET", "/p/assets/{name}"): PUBLIC,
    ("POST", "/p/{token}/withdraw"): PUBLIC,
    ("POST", "/p/{token}/give"): PUBLIC,
    ("POST", "/p/{token}/transfer"): PUBLIC,
    ("POST", "/p/{token}/opt-out"): PUBLIC,
    ("POST", "/p/{token}/request"): PUBLIC,
    # Accountability: auditors and admins read; the public signing keys (JWKS) need no key
    ("GET", "/v1/audit/events"): READERS,
    ("GET", "/v1/audit/checkpoints"): READERS,
    ("GET", "/v1/audit/verify"): READERS,
    ("GET", "/v1/keys"): PUBLIC,
    ("GET", "/.well-known/jwks.json"): PUBLIC,
    ("GET", "/v1/subjects/{subject_id}/consent-proof"): CRM_READ,
    ("GET", "/v1/reports/processing-activities"): READERS,
    ("GET", "/v1/reports/overview"): READERS,
    # Retention: rules read by every key (catalogue data), written and swept by admin only
    ("GET", "/v1/retention-rules"): EVERY_ROLE,
    ("GET", "/v1/retention-rules/{category}"): EVERY_ROLE,
    ("PUT", "/v1/retention-rules/{category}"): frozenset({ADMIN}),
    ("POST", "/v1/retention/sweep"): frozenset({ADMIN}),
    # The auditor's sign-in pages (a browser cannot send a bearer header): the form itself
    # is public; what it opens is the overview above
    ("GET", "/auditor/link/{token}"): OWN_CREDENTIAL,
    ("GET", "/auditor/login"): PUBLIC,
    ("POST", "/auditor/login"): OWN_CREDENTIAL,
    ("POST", "/auditor/logout"): PUBLIC,
    # The privacy team's console (API.md): crm and admin keys, an auditor reads. Pages read
    # with the scope the API's GET asks for; each form needs the scope of the API call it
    # makes (an auditor holds no write scope: every form is refused). A bearer key opens
    # them too; a browser holds the console's own session cookie.
    ("GET", "/console/"): CRM_READ,
    ("GET", "/console/requests/{request_id}"): CRM_READ,
    ("GET", "/console/requests/{request_id}/export"): CRM_READ,
    ("POST", "/console/requests"): frozenset({CRM}),
    ("POST", "/console/requests/{request_id}/verify-identity"): frozenset({CRM}),
    ("POST", "/console/requests/{request_id}/extend"): frozenset({CRM}),
    ("POST", "/console/requests/{request_id}/pause"): frozenset({CRM}),
    ("POST", "/console/requests/{request_id}/resume"): frozenset({CRM}),
    ("POST", "/console/requests/{request_id}/complete"): frozenset({CRM}),
    ("POST", "/console/requests/{request_id}/reject"): frozenset({CRM}),
    ("GET", "/console/people"): CRM_READ,
    ("GET", "/console/people/{subject_id}"): CRM_READ,
    ("POST", "/console/people/{subject_id}/withdraw"): frozenset({CRM}),
    ("POST", "/console/people/{subject_id}/opt-out"): frozenset({CRM}),
    ("POST", "/console/people/{subject_id}/links"): frozenset({CRM}),
    ("POST", "/console/people/{subject_id}/merge"): frozenset({CRM}),
    ("GET", "/console/catalogues"): CRM_READ,
    # The catalogue forms are an admin's (API.md: "admin | write catalogues"): the page as
    # well as its POST; crm and auditor read the catalogues page only.
    ("GET", "/console/catalogues/purpose"): frozenset({ADMIN}),
    ("POST", "/console/catalogues/purpose"): frozenset({ADMIN}),
    ("GET", "/console/catalogues/recipient"): frozenset({ADMIN}),
    ("POST", "/console/catalogues/recipient"): frozenset({ADMIN}),
    ("GET", "/console/catalogues/policy"): frozenset({ADMIN}),
    ("POST", "/console/catalogues/policy"): frozenset({ADMIN}),
    ("GET", "/console/catalogues/retention"): frozenset({ADMIN}),
    ("POST", "/console/catalogues/retention"): frozenset({ADMIN}),
    ("GET", "/console/catalogues/controller"): frozenset({ADMIN}),
    ("POST", "/console/catalogues/controller"): frozenset({ADMIN}),
    ("GET", "/console/deliveries"): READERS,
    ("GET", "/console/deliveries/{key}"): READERS,
    ("POST", "/console/deliveries/{key}/{delivery_id}/retry"): frozenset({ADMIN}),
    # The console's sign-in (its own credential: the form's CSRF token, the signed link)
    ("GET", "/console/login"): PUBLIC,
    ("POST", "/console/login"): OWN_CREDENTIAL,
    ("GET", "/console/link/{token}"): OWN_CREDENTIAL,
    ("POST", "/console/logout"): CRM_READ,
}
