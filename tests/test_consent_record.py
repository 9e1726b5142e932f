"""The ISO/IEC TS 27560 consent record (`GET /v1/consent-events/{id}/record`) as JSON-LD with
W3C DPV terms: expanded offline with pyld (a document loader that refuses the network), every
IRI it uses checked against terms pinned from the published vocabularies (an invented
`dpv:` term fails), every field of the guide's minimal record present, and the receipt
attached verifies with the JWKS."""

from typing import Any

import jwt
import pytest
from pyld import jsonld

from tests.conftest import new_subject
from tests.test_consent import NOTICE, give

# Pinned from the published vocabularies (read 2026-02 from the w3c/dpv repository, commit
# f01a55c3c0983e35cdfdf80593ece3353faba7b8):
# - DPV 2.2, https://w3id.org/dpv (2.2/dpv/dpv.ttl): each term below is declared there.
# - DPV-PD 2.2 (2.2/pd/pd.ttl), DPV-LOC 2.2 (2.2/loc/loc.ttl), DPV-LEGAL-GB 2.2
#   (2.2/legal/gb/legal-gb.ttl: `law-GDPR` is the UK GDPR).
# - The DPV-27560 schema IRIs (schema/dpv-27560.ttl).
# - DCMI Metadata Terms, http://purl.org/dc/terms/
#   (https://www.dublincore.org/specifications/dublin-core/dcmi-terms/).
# - rdf:value from RDF 1.1 Schema (the guide's durations use it).
DPV = "https://w3id.org/dpv#"
DPV_TERMS = {
    DPV + t
    for t in (
        "ConsentRecord ConsentReceipt ConsentNotice PrivacyNotice DataSubject DataController "
        "Organisation ThirdParty Process Purpose ExpressedConsent ConsentGiven ConsentWithdrawn "
        "TemporalDuration UntilEventDuration StorageDuration WithdrawConsent DataSubjectRight "
        "hasDataSubject hasDataController hasPurpose hasLegalBasis hasConsentStatus hasNotice "
        "hasProcess hasPersonalData hasStorageCondition hasRecipient hasJurisdiction "
        "hasApplicableLaw hasConsentControl isExercisedAt hasRight hasEntity hasName "
        "hasIdentifier hasContact hasAddress hasCountry isIndicatedAtTime isIndicatedBy "
        "hasIndicationMethod hasDuration hasRecordOfActivity"
    ).split()
}
OTHER_DPV_TERMS = {
    "https://w3id.org/dpv/pd#Name",
    "https://w3id.org/dpv/pd#EmailAddress",
    "https://w3id.org/dpv/loc#GB",
    "https://w3id.org/dpv/loc#US",
    "https://w3id.org/dpv/legal/gb#law-GDPR",
    "https://w3id.org/dpv/schema/dpv-27560#record",
}
DCT = "http://purl.org/dc/terms/"
DCT_TERMS = {
    DCT + t
    for t in "identifier conformsTo created description language title source format".split()
}
RDF_VALUE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#value"
XSD_DATETIME = "http://www.w3.org/2001/XMLSchema#dateTime"
PINNED = DPV_TERMS | OTHER_DPV_TERMS | DCT_TERMS | {RDF_VALUE}
VOCABULARIES = ("https://w3id.org/dpv", DCT, "http://www.w3.org/1999/02/22-rdf-syntax-ns#")

# The guide's consent record with only the required fields ("Example of a Consent Record
# with only the required fields", https://w3id.org/dpv/guides/consent-27560 §8.6), and the
# fields its sections say MUST be present: each as a path of expanded properties.
MINIMAL_RECORD = [
    (DCT + "identifier",),
    (DCT + "conformsTo",),
    (DPV + "hasDataSubject",),
    (DPV + "hasDataController",),
    (DPV + "hasJurisdiction",),
    (DPV + "hasApplicableLaw",),
    (DPV + "hasNotice",),
    (DPV + "hasNotice", DCT + "language"),
    (DPV + "hasProcess", DPV + "hasPurpose"),
    (DPV + "hasProcess", DPV + "hasPersonalData"),
    (DPV + "hasProcess", DPV + "hasStorageCondition"),
    (DPV + "hasProcess", DPV + "hasRecipient"),
    (DPV + "hasProcess", DPV + "hasDataController"),
    (DPV + "hasProcess", DPV + "hasLegalBasis"),
    (DPV + "hasProcess", DPV + "hasConsentControl"),
    (DPV + "hasProcess", DPV + "hasJurisdiction"),
    (DPV + "hasProcess", DPV + "hasRight"),
    (DPV + "hasConsentStatus",),
    (DPV + "hasConsentStatus", DPV + "isIndicatedAtTime"),
    (DPV + "hasConsentStatus", DPV + "isIndicatedBy"),
    (DPV + "hasConsentStatus", DPV + "hasIndicationMethod"),
    (DPV + "hasConsentStatus", DPV + "hasDuration"),
    (DPV + "hasEntity", DPV + "hasName"),
    (DPV + "hasEntity", DPV + "hasIdentifier"),
    (DPV + "hasEntity", DPV + "hasContact"),
    (DPV + "hasEntity", DPV + "hasAddress"),
]


def _offline(url: str, options: Any = None) -> Any:
    raise AssertionError(f"the record must expand without fetching anything: {url}")


def expand(document: dict) -> list[dict]:
    return jsonld.expand(document, {"documentLoader": _offline})


def iris(node: Any, found: set[str]) -> set[str]:
    """Every property IRI, every `@type`, and every `@id` in a vocabulary's namespace."""
    if isinstance(node, list):
        for item in node:
            iris(item, found)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "@type":
                types = value if isinstance(value, list) else [value]
                found.update(t for t in types if t != XSD_DATETIME)
            elif key == "@id":
                if value.startswith(VOCABULARIES):
                    found.add(value)
            elif key == "@reverse":
                found.update(value)
                iris(list(value.values()), found)
            elif not key.startswith("@"):
                found.add(key)
                iris(value, found)
    return found


def follow(node: dict, path: tuple[str, ...], graph: dict[str, dict]) -> list[Any]:
    """The values at a path of properties (node references followed within the document)."""
    values: list[Any] = [node]
    for prop in path:
        nxt: list[Any] = []
        for v in values:
            if isinstance(v, dict) and set(v) == {"@id"} and v["@id"] in graph:
                v = graph[v["@id"]]
            nxt.extend(v.get(prop, []) if isinstance(v, dict) else [])
        values = nxt
    return values


def _graph(expanded: list[dict]) -> dict[str, dict]:
    nodes: dict[str, dict] = {}

    def walk(n: Any) -> None:
        if isinstance(n, list):
            for i in n:
                walk(i)
        elif isinstance(n, dict):
            if "@id" in n and len(n) > 1:
                nodes[n["@id"]] = n
            for v in n.values():
                walk(v)

    walk(expanded)
    return nodes


async def _record(client, crm, **consent) -> tuple[dict, dict]:
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    r = await client.post("/v1/consent-events", json=give(s["id"], **consent), headers=crm)
    assert r.status_code == 201, r.text
    record = await client.get(
        f"/v1/consent-events/{r.json()['id']}/record",
        headers={**crm, "Accept": "application/ld+json"},
    )
    assert record.status_code == 200, record.text
    assert record.headers["content-type"].startswith("application/ld+json")
    return s, record.json()


async def test_the_record_uses_only_published_terms_and_has_the_minimal_fields(client, crm, admin):
    purposes = (await client.get("/v1/purposes?limit=1000", headers=admin)).json()["items"]
    entry = next(p for p in purposes if p["key"] == "content_subscriptions")
    body = {k: entry[k] for k in ("description", "allowed_bases", "direct_marketing")}
    await client.put(
        "/v1/purposes/content_subscriptions",
        json={**body, "consent_valid_months": 24},
        headers=admin,
    )
    s, document = await _record(client, crm)
    expanded = expand(document)
    assert len(expanded) == 1
    used = iris(expanded, set())
    assert used - PINNED == set(), "terms that are not in the pinned vocabularies"
    record = expanded[0]
    assert record["@type"] == [DPV + "ConsentRecord"]
    graph = _graph(expanded)
    missing = [path for path in MINIMAL_RECORD if not follow(record, path, graph)]
    assert missing == []
    # What it says: pseudonymous subject, the notice shown, the state, the period.
    subject = record[DPV + "hasDataSubject"][0]
    assert subject["@id"] == f"urn:uuid:{s['id']}" and s["email"] not in str(document)
    notices = record[DPV + "hasNotice"]
    consent_notice = next(n for n in notices if DPV + "ConsentNotice" in n["@type"])
    assert consent_notice[DCT + "description"][0]["@value"] == NOTICE
    status = record[DPV + "hasConsentStatus"][0]
    assert set(status["@type"]) == {DPV + "ConsentGiven", DPV + "ExpressedConsent"}
    assert status[DPV + "hasDuration"][0][RDF_VALUE][0]["@value"] == "P24M"
    assert (
        follow(record, (DPV + "hasConsentStatus", DPV + "isIndicatedAtTime"), graph)[0]["@type"]
        == XSD_DATETIME
    )


async def test_an_invented_dpv_term_fails_the_check(client, crm):
    _, document = await _record(client, crm)
    document["dpv:hasConsentMood"] = "happy"
    assert iris(expand(document), set()) - PINNED == {DPV + "hasConsentMood"}


async def test_a_transfer_consent_names_its_recipient_and_the_receipt_verifies(client, crm):
    _, document = await _record(
        client, crm, purpose="international_transfer", recipient="mailchimp"
    )
    expanded = expand(document)
    assert iris(expanded, set()) - PINNED == set()
    recipients = expanded[0][DPV + "hasProcess"][0][DPV + "hasRecipient"]
    assert [r[DPV + "hasName"][0]["@value"] for r in recipients] == ["MailChimp"]
    assert recipients[0][DPV + "hasCountry"] == [{"@id": "https://w3id.org/dpv/loc#US"}]
    receipt = expanded[0]["@reverse"][DPV + "hasRecordOfActivity"][0]
    token = receipt[RDF_VALUE][0]["@value"]
    jwks = (await client.get("/v1/keys")).json()
    key = jwt.PyJWK(jwks["keys"][0]).key
    payload = jwt.decode(token, key, algorithms=["ES256"])
    assert payload["consentReceiptID"] == document["dct:identifier"]
    assert payload["iso27560"]["recipient"] == "mailchimp"


async def test_the_proof_links_to_the_record(client, crm, auditor):
    s, document = await _record(client, crm)
    proof = await client.get(f"/v1/subjects/{s['id']}/consent-proof", headers=auditor)
    assert proof.status_code == 200, proof.text
    (event,) = proof.json()["events"]
    assert event["record"] == f"/v1/consent-events/{document['dct:identifier']}/record"
    assert (await client.get(event["record"], headers=auditor)).status_code == 200


@pytest.mark.parametrize("role", ["website", "sync"])
async def test_only_readers_of_consent_get_the_record(client, crm, make_key, role):
    _, document = await _record(client, crm)
    key = await make_key(role)
    r = await client.get(f"/v1/consent-events/{document['dct:identifier']}/record", headers=key)
    assert r.status_code == 403
