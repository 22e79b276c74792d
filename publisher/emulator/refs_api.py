"""Refs in the Hub emulator: the routes for refs, commit history, branches, tags and pull requests.

    GET    /api/{T}/{repo}/refs[?include_prs=1]        branches, converts, tags (+ pullRequests)
    GET    /api/{T}/{repo}/commits/{rev}               history, paginated
    POST   /api/{T}/{repo}/branch/{branch}             {"startingPoint"?}; 409 when it exists
    DELETE /api/{T}/{repo}/branch/{branch}
    POST   /api/{T}/{repo}/tag/{rev}                   {"tag", "message"?}: the path names what is tagged
    DELETE /api/{T}/{repo}/tag/{tag}
    POST   /api/{T}/{repo}/discussions                 pull requests only: {"title","description","pullRequest"}
    GET    /api/{T}/{repo}/discussions[/{num}]         list, or one PR's details

Branch and tag names may contain ``/`` (they arrive as one ``%2F``-encoded segment).
"""

from __future__ import annotations

from typing import Any

from .storage import DEFAULT_BRANCH, HubError, RepoId


class RefRoutes:
    """Mixin for the request handler; uses its auth, body and pagination helpers."""

    server: Any

    def _refs(self, repo: RepoId) -> None:
        self._reader(repo)
        refs = self.server.storage.refs(repo)

        def items(kind: str, prefix: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": prefix + n, "targetCommit": oid} for n, oid in sorted(refs[kind].items())]

        data: dict[str, Any] = {
            "branches": items("branches", "refs/heads/"),
            "converts": [],
            "tags": items("tags", "refs/tags/"),
        }
        if self._flag("include_prs"):
            data["pullRequests"] = [
                {"name": f"refs/pr/{num}", "ref": f"refs/pr/{num}", "targetCommit": pr["head"]}
                for num, pr in sorted(refs["prs"].items(), key=lambda item: int(item[0]))
            ]
        self._send_json(data)

    def _commits(self, repo: RepoId, revision: str) -> None:
        self._reader(repo)
        storage = self.server.storage
        commits = [
            {
                "id": oid,
                "authors": [{"user": commit["author"], "avatar": None}],
                "date": commit["date"],
                "title": commit["message"],
                "message": commit.get("description", ""),
            }
            for oid, commit in storage.history(repo, storage.resolve(repo, revision))
        ]
        self._paginate(commits)

    def _create_branch(self, repo: RepoId, branch: str) -> None:
        self._repo_writer(repo)
        starting_point = self._read_json().get("startingPoint") or DEFAULT_BRANCH
        self.server.storage.create_branch(repo, branch, starting_point)
        self._send_json({})

    def _delete_branch(self, repo: RepoId, branch: str) -> None:
        self._repo_writer(repo)
        self._discard_body()
        self.server.storage.delete_branch(repo, branch)
        self._send_json({})

    def _create_tag(self, repo: RepoId, revision: str) -> None:
        self._repo_writer(repo)
        tag = self._read_json().get("tag")
        if not isinstance(tag, str):
            raise HubError(400, "The body must name the 'tag'")
        self.server.storage.create_tag(repo, tag, revision)
        self._send_json({})

    def _delete_tag(self, repo: RepoId, tag: str) -> None:
        self._repo_writer(repo)
        self._discard_body()
        self.server.storage.delete_tag(repo, tag)
        self._send_json({})

    def _create_discussion(self, repo: RepoId) -> None:
        user = self._repo_writer(repo)
        body = self._read_json()
        if not body.get("pullRequest"):
            raise HubError(400, "The Hub emulator supports pull requests only, not plain discussions")
        title = body.get("title") or "Pull request"
        num = self.server.storage.create_pull_request(
            repo, title=title, description=body.get("description") or "", author=user.name
        )
        self._send_json({"num": num, "url": f"{self._base_url()}/{repo.url_path}/discussions/{num}"})

    def _discussion_json(self, repo: RepoId, num: str, pr: dict[str, Any]) -> dict[str, Any]:
        return {
            "num": int(num),
            "title": pr["title"],
            "status": pr["status"],
            "createdAt": pr["createdAt"],
            "author": {"name": pr["author"]},
            "repo": {"name": repo.id, "type": repo.type},
            "isPullRequest": True,
            "pinned": False,
            "numComments": 0,
        }

    def _discussions(self, repo: RepoId, num: str) -> None:
        self._reader(repo)
        prs = self.server.storage.refs(repo)["prs"]
        if not num:
            items = [self._discussion_json(repo, n, pr) for n, pr in sorted(prs.items(), key=lambda i: -int(i[0]))]
            self._send_json({"discussions": items, "count": len(items), "start": 0, "numClosedDiscussions": 0})
            return
        if num not in prs:
            raise HubError(404, f"Discussion {num} not found in {repo.id}")
        pr = prs[num]
        details = self._discussion_json(repo, num, pr) | {
            "events": [],
            "changes": {"base": f"refs/heads/{pr['base']}", "headCommitId": pr["head"]},
            "filesWithConflicts": [],
            "diff": "",
        }
        self._send_json(details)
