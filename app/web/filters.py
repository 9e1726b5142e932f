"""The Jinja filters every page uses: labels for codes (app.web.labels) and UK dates
(app.web.dates). Both the auditor's and the person's template environments install them,
so a page never formats a code or a date its own way."""

from jinja2 import Environment

from app.services.person.pages import plain
from app.web.dates import month_label, uk_date
from app.web.labels import coded, described, label


def install(env: Environment) -> None:
    env.filters.update(
        uk_date=uk_date,
        month=month_label,
        label=label,
        coded=coded,
        described=described,
        plain=plain,
    )
