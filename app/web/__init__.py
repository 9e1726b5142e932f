"""Server-rendered pages (Jinja2 templates and static files served by the app itself, never
from a CDN): the auditor's overview and reports, and the person's own unsubscribe and
preference pages."""
