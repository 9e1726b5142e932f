"""Plain-language labels for the codes the pages show: the one place a page gets the words
for a lawful basis, a rights request's type or status, a deny reason, a retention rule, a
transfer safeguard or a role. Catalogue entries (purposes, categories, sources) are
labelled by their own descriptions, which an admin edits; only their policy-clause
references ("(§5)") are left off, as on the person's page.

Labels only: nothing here decides anything. An auditor sees the label with the code on a
smaller second line (the code is what the API, the audit log and the JSON reports say); the
person sees the label alone.
"""

from markupsafe import Markup, escape

from app.services.person.pages import plain

LABELS: dict[str, dict[str, str]] = {
    "basis": {
        "consent": "Consent (Art 6(1)(a))",
        "contract": "Contract (Art 6(1)(b))",
        "legal_obligation": "Legal obligation (Art 6(1)(c))",
        "legitimate_interests": "Legitimate interests (Art 6(1)(f))",
    },
    "request_type": {
        "access": "Access to personal data (Art 15)",
        "rectification": "Rectification (Art 16)",
        "erasure": "Erasure (Art 17)",
        "restriction": "Restriction of processing (Art 18)",
        "portability": "Data portability (Art 20)",
        "object_processing": "Objection to processing (Art 21(1))",
        "object_marketing": "Objection to direct marketing (Art 21(2))",
        "withdraw_consent": "Withdrawal of consent (Art 7(3))",
    },
    "request_status": {
        "received": "Received",
        "identity_verified": "Identity verified",
        "completed": "Completed",
        "rejected": "Refused",
    },
    # The same statuses as the person reads them on their own page.
    "request_status_for_person": {
        "received": "Received",
        "identity_verified": "In progress",
        "completed": "Done",
        "rejected": "Refused",
    },
    "reason": {
        "subject_unknown": "Person not known",
        "subject_erased": "Person's data erased",
        "subject_merged": "Record merged into another",
        "restricted": "Processing restricted (Art 18)",
        "retention_expired": "Retention period over",
        "no_lawful_basis": "No lawful basis recorded",
        "basis_not_allowed": "Basis not allowed for this purpose",
        "consent_missing": "No consent given",
        "consent_withdrawn": "Consent withdrawn",
        "consent_outdated": "Consent given under an outdated privacy policy",
        "consent_expired": "Consent expired",
        "contract_ended": "Contract ended",
        "objected": "The person objected (Art 21)",
        "marketing_opt_out": "Opted out of marketing",
        "transfer_not_permitted": "Transfer outside the EEA/UK not permitted",
        "recipient_not_for_purpose": "Recipient not listed for this purpose",
    },
    "retention_rule": {
        "contract_end_plus": "A set period after the last contract ends",
        "interest_ceased": "Until interest ceases, plus a grace period",
        "fixed_period": "A set period after the record is created",
    },
    # What each rule's period counts from (keyed by the rule).
    "retention_anchor": {
        "contract_end_plus": "The end of the last contract (or the record's creation, "
        "where there never was a contract)",
        "interest_ceased": "The date interest ceased",
        "fixed_period": "The creation of the person's record",
    },
    "safeguard": {
        "explicit_consent": "The person's explicit consent (Art 49(1)(a))",
        "adequacy_decision": "Adequacy decision (Art 45)",
        "standard_contractual_clauses": "Standard contractual clauses (Art 46(2)(c))",
        "binding_corporate_rules": "Binding corporate rules (Art 47)",
    },
    "recipient_role": {
        "partner": "Partner (a controller of its own)",
        "processor": "Processor (Art 28)",
    },
    # The console's rights request forms and history (app.web.console).
    "pause_reason": {
        "awaiting_identity": "Waiting for proof of identity",
        "awaiting_clarification": "Waiting for the person to clarify the request",
        "awaiting_fee": "Waiting for a fee",
    },
    "identity_method": {
        "email": "Reply from the e-mail address held",
        "document": "Identity document",
        "known_contact": "Known contact",
        "other": "Other",
        "link": "The person's own signed link",
        "email_link": "Confirmed from a link e-mailed to the address",
    },
    "rejection_code": {
        "identity_not_confirmed": "Identity not confirmed",
        "manifestly_unfounded": "Manifestly unfounded (Art 12(5))",
        "manifestly_excessive": "Manifestly excessive (Art 12(5))",
        "legal_exemption": "Legal exemption",
        "other": "Other",
    },
    "request_action": {
        "received": "Received",
        "identity_verified": "Identity verified",
        "extended": "Deadline extended",
        "paused": "Clock stopped",
        "resumed": "Clock restarted",
        "completed": "Completed",
        "rejected": "Refused",
    },
    "subject_status": {
        "active": "Active",
        "restricted": "Processing restricted (Art 18)",
        "erased": "Erased",
    },
    "delivery_status": {
        "pending": "Waiting to be sent",
        "delivered": "Delivered",
        "failed": "Failed for good",
    },
    "api_role": {
        "admin": "administrator",
        "auditor": "auditor",
        "crm": "CRM",
        "website": "website",
        "sync": "sync worker",
    },
}


def label(code: str | None, kind: str) -> str:
    """The plain words for `code`; a code the catalogue lacks (a safeguard an admin named,
    say) reads as its words rather than failing the page."""
    if code is None:
        return ""
    known = LABELS[kind].get(code)
    return known if known is not None else code.replace("_", " ").capitalize()


def _with_code(words: str, code: str) -> Markup:
    return Markup('{}<small class="code">{}</small>').format(escape(words), escape(code))


def coded(code: str | None, kind: str) -> Markup:
    """An auditor's cell: the label, then the code on a smaller second line."""
    if code is None:
        return Markup("")
    return _with_code(label(code, kind), code)


def described(code: str, description: str | None) -> Markup:
    """A catalogue entry for an auditor: its description, then its key."""
    return _with_code(plain(description) if description else code, code)
