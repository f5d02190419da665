"""Posting a report as a comment on a GitHub issue, through miyabi's GitHub client
(:mod:`miyabi.work.github`, the layout's ``github:`` section and its token)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from miyabi import defaults
from miyabi.config.settings import GitHubSettings
from miyabi.reports.kpis import Report
from miyabi.reports.render import ReportError, to_markdown
from miyabi.work.github import GitHub, client_for

CUT_NOTE = "\n\n*Cut to fit GitHub's comment limit; `miyabi report` prints the whole report.*\n"


def fit(markdown: str, limit: int = defaults.GITHUB_COMMENT_MAX) -> str:
    """``markdown`` if it has at most ``limit`` characters, else its first whole lines
    that fit with a note saying it was cut."""
    if len(markdown) <= limit:
        return markdown
    head = markdown[: max(0, limit - len(CUT_NOTE))]
    return head[: head.rfind("\n") + 1].rstrip("\n") + CUT_NOTE


def post(
    report: Report,
    github: GitHubSettings | None,
    issue: int,
    layout_path: Path,
    client: Callable[[GitHubSettings], GitHub] | None = None,
) -> str:
    """Post ``report`` as Markdown (:func:`~miyabi.reports.render.to_markdown`, cut to
    GitHub's limit) as a comment on issue ``issue`` of the layout's repository.

    Args:
        github: the layout's ``github:`` section.
        layout_path: the layout's file (named in the error when it has no ``github:``).
        client: makes the GitHub client (default: :func:`~miyabi.work.github.client_for`
            with no home, so the controller's poll statistics stay its own).

    Returns:
        Where it went: ``owner/name#N``.

    Raises:
        ReportError: the layout has no ``github:`` section.
        GitHubError: GitHub refused the comment or could not be reached (one line;
            never the token).
    """
    if github is None:
        raise ReportError(
            f"{layout_path} has no github: section to post the report through; add `github: {{repo: owner/name}}` to it"
        )
    body = fit(to_markdown(report))
    gh = (client or client_for)(github)
    try:
        gh.comment(issue, body)
    finally:
        gh.close()
    return f"{github.repo}#{issue}"
