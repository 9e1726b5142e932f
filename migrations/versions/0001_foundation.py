"""Foundation: keys, catalogues seeded from the policy, subjects, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 16:34:01.229925
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Seeded from the controller's policy (shared/seeds/000_554186a54c2affaf.txt); the
# clause each row comes from is named. An admin edits these through the API later.
CATEGORIES = [
    # key, description, retention rule (§7), months
    ("customer_contact", "Contact at an existing customer (§2)", "contract_end_plus", 72),
    ("prospect", "Contact at a prospective customer (§2)", "interest_ceased", None),
    # §7 sets no period for visitors and social-media contacts: DOMAIN.md says
    # "a configurable period"; 24 months is the starting value.
    ("visitor", "Visitor to offices, meetings or demonstrations (§2)", "fixed_period", 24),
    (
        "social_media_contact",
        "Contact active on social media on related subjects (§2)",
        "fixed_period",
        24,
    ),
    ("supplier_contact", "Contact at a supplier (§2, §7)", "contract_end_plus", 72),
    (
        "advisor_contact",
        "Advisor, associate, consultant or staff of a commercial relationship (§2, §7)",
        "contract_end_plus",
        72,
    ),
]
SOURCES = [
    ("enquiry", "Enquiry by telephone, e-mail or web (§4)"),
    ("event", "Business card given at an event or exhibition (§4)"),
    ("third_party_introduction", "Introduction by a third party (§4)"),
    ("employer_nominated", "Nominated by the employer, e.g. as project contact (§4)"),
    ("product_use", "Use of products, training, consultancy or technical support (§4)"),
    (
        "public_source",
        "Public source: internet search, company web site, LinkedIn, Facebook, Twitter, WordPress (§4)",
    ),
]
PURPOSES = [
    # key, description, allowed bases (§9), direct marketing
    (
        "day_to_day_communications",
        "Day-to-day business communications (§5)",
        ["contract", "legitimate_interests"],
        False,
    ),
    (
        "contractual_communications",
        "Communications needed to supply systems, services, training and support (§5)",
        ["contract"],
        False,
    ),
    (
        "account_management",
        "Managing accounts: paying and raising invoices (§5)",
        ["contract", "legal_obligation"],
        False,
    ),
    (
        "email_campaigns",
        "E-mail campaigns: releases, enhancements, training dates (§5)",
        ["consent", "legitimate_interests"],
        True,
    ),
    (
        "business_development",
        "Promotion and prospecting (§5)",
        ["consent", "legitimate_interests"],
        True,
    ),
    ("content_subscriptions", "White papers, blogs and specific enquiries (§9)", ["consent"], True),
    (
        "partner_referral",
        "Sharing with partners to follow up interest (§6)",
        ["consent", "legitimate_interests"],
        True,
    ),
    ("surveys", "Surveys through SurveyMonkey (§6)", ["consent", "legitimate_interests"], False),
    (
        "international_transfer",
        "Transfer outside the EEA/UK, per recipient (§8)",
        ["consent"],
        False,
    ),
]
RECIPIENTS = [
    # key, name, role, country, inside EEA/UK, safeguard (§8: explicit consent), purposes
    ("maximizer", "Maximizer Software Ltd", "partner", "GB", True, None, ["partner_referral"]),
    (
        "bpmonline",
        "BPM'online Inc.",
        "partner",
        "US",
        False,
        "explicit_consent",
        ["partner_referral"],
    ),
    (
        "mailchimp",
        "MailChimp",
        "processor",
        "US",
        False,
        "explicit_consent",
        ["email_campaigns", "business_development", "content_subscriptions"],
    ),
    ("surveymonkey", "SurveyMonkey", "processor", "US", False, "explicit_consent", ["surveys"]),
]
# The policy text carries no version or date: version "1" with no published_at.
FIRST_POLICY_SHA256 = "a63064901c00024821cbc6f05e0b4e580226f34faeba941559cc52c48964296b"


def _seed() -> None:
    categories = sa.table(
        "categories",
        sa.column("key"),
        sa.column("description"),
        sa.column("retention_rule"),
        sa.column("retention_months"),
    )
    sources = sa.table("sources", sa.column("key"), sa.column("description"))
    purposes = sa.table(
        "purposes",
        sa.column("key"),
        sa.column("description"),
        sa.column("allowed_bases", postgresql.ARRAY(sa.String())),
        sa.column("direct_marketing"),
    )
    recipients = sa.table(
        "recipients",
        sa.column("key"),
        sa.column("name"),
        sa.column("role"),
        sa.column("country"),
        sa.column("inside_eea_uk"),
        sa.column("transfer_safeguard"),
        sa.column("purposes", postgresql.ARRAY(sa.String())),
    )
    policies = sa.table(
        "policies",
        sa.column("id", sa.Uuid()),
        sa.column("version"),
        sa.column("published_at"),
        sa.column("url"),
        sa.column("text_sha256"),
        sa.column("created_at"),
    )
    op.bulk_insert(
        categories,
        [
            dict(zip(("key", "description", "retention_rule", "retention_months"), r))
            for r in CATEGORIES
        ],
    )
    op.bulk_insert(sources, [{"key": k, "description": d} for k, d in SOURCES])
    op.bulk_insert(
        purposes,
        [
            dict(zip(("key", "description", "allowed_bases", "direct_marketing"), r))
            for r in PURPOSES
        ],
    )
    op.bulk_insert(
        recipients,
        [
            dict(
                zip(
                    (
                        "key",
                        "name",
                        "role",
                        "country",
                        "inside_eea_uk",
                        "transfer_safeguard",
                        "purposes",
                    ),
                    r,
                )
            )
            for r in RECIPIENTS
        ],
    )
    op.execute(
        policies.insert().values(
            id=sa.text("gen_random_uuid()"),
            version="1",
            published_at=None,
            url=None,
            text_sha256=FIRST_POLICY_SHA256,
            created_at=sa.text("now()"),
        )
    )


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor_key_id", sa.Uuid(), nullable=True),
        sa.Column("actor_name", sa.String(length=100), nullable=False),
        sa.Column("actor_role", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("entity", sa.String(length=40), nullable=False),
        sa.Column("entity_id", sa.String(length=100), nullable=True),
        sa.Column("digest", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("position", name=op.f("uq_audit_entries_position")),
    )
    op.create_index(
        "ix_audit_entries_unsealed",
        "audit_entries",
        ["id"],
        unique=False,
        postgresql_where=sa.text("position IS NULL"),
    )
    op.create_table(
        "categories",
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("retention_rule", sa.String(length=30), nullable=False),
        sa.Column("retention_months", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_categories")),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("url", sa.String(length=2000), nullable=True),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
        sa.UniqueConstraint("version", name=op.f("uq_policies_version")),
    )
    op.create_table(
        "purposes",
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("allowed_bases", postgresql.ARRAY(sa.String()), nullable=False),
        sa.Column("direct_marketing", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_purposes")),
    )
    op.create_table(
        "recipients",
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("inside_eea_uk", sa.Boolean(), nullable=False),
        sa.Column("transfer_safeguard", sa.String(length=63), nullable=True),
        sa.Column("purposes", postgresql.ARRAY(sa.String()), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_recipients")),
    )
    op.create_table(
        "sources",
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sources")),
    )
    op.create_table(
        "subjects",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("phone", sa.String(length=50), nullable=True),
        sa.Column("mobile", sa.String(length=50), nullable=True),
        sa.Column("job_title", sa.String(length=200), nullable=True),
        sa.Column("company", sa.String(length=200), nullable=True),
        sa.Column("business_address", sa.String(length=1000), nullable=True),
        sa.Column("category", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=63), nullable=False),
        sa.Column("source_detail", sa.String(length=500), nullable=True),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("interest_ceased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["category"], ["categories.key"], name=op.f("fk_subjects_category_categories")
        ),
        sa.ForeignKeyConstraint(
            ["source"], ["sources.key"], name=op.f("fk_subjects_source_sources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subjects")),
    )
    op.create_index(op.f("ix_subjects_category"), "subjects", ["category"], unique=False)
    op.create_index("ix_subjects_created_at_id", "subjects", ["created_at", "id"], unique=False)
    op.create_index(
        "uq_subjects_email_live",
        "subjects",
        ["email"],
        unique=True,
        postgresql_where=sa.text("erased_at IS NULL"),
    )
    _seed()


def downgrade() -> None:
    op.drop_index(
        "uq_subjects_email_live",
        table_name="subjects",
        postgresql_where=sa.text("erased_at IS NULL"),
    )
    op.drop_index("ix_subjects_created_at_id", table_name="subjects")
    op.drop_index(op.f("ix_subjects_category"), table_name="subjects")
    op.drop_table("subjects")
    op.drop_table("sources")
    op.drop_table("recipients")
    op.drop_table("purposes")
    op.drop_table("policies")
    op.drop_table("categories")
    op.drop_index(
        "ix_audit_entries_unsealed",
        table_name="audit_entries",
        postgresql_where=sa.text("position IS NULL"),
    )
    op.drop_table("audit_entries")
    op.drop_table("audit_checkpoints")
    op.drop_table("api_keys")
