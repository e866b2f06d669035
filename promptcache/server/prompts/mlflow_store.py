"""Prompts in MLflow's prompt registry, through MLflow's own client (`promptcache[mlflow]`).

`--prompt-store mlflow+http://HOST:PORT` keeps the registry on an MLflow tracking server, where
teams already version their prompts: what is registered here shows up in MLflow's UI, and a
version made there (in the `{{variable}}` format both share) is usable here.

Mapping. MLflow's prompt names are global, ours are per tenant: prompt `pmpt_…` of a tenant is
the MLflow prompt `promptcache.<sha256(tenant)[:16]>.pmpt_…`, tagged with the tenant's digest
(how a tenant's prompts are listed), its name (for --warm-prompts) and our `name`. Versions are MLflow's own numbers, handed
out by its server (two replicas adding a version never collide); the default version is the
alias `default`; `warm` is a version tag. A prompt MLflow has but that lacks our tags is not
a tenant's and is never served.

MLflow's client retries an unreachable server for minutes by default; unless the environment
says otherwise, this store lets it try twice with a 10 s timeout, and a server that cannot be
reached is a 503 (StoreUnavailable), like an unreachable Redis.
"""

from __future__ import annotations

import hashlib
import os

from promptcache.server.prompts.store import PromptInfo, PromptNotFound, PromptVersion, info_after_change
from promptcache.tiers.store import StoreUnavailable

ALIAS = "default"
TENANT_TAG = "promptcache.tenant_sha256"  # what a tenant's prompts are searched by (quote-free)
TENANT_NAME_TAG = "promptcache.tenant"
NAME_TAG = "promptcache.name"
WARM_TAG = "promptcache.warm"
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _digest(tenant: str) -> str:
    return hashlib.sha256(tenant.encode()).hexdigest()[:16]


class MlflowPromptStore:
    def __init__(self, tracking_uri: str):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException
        except ImportError:
            raise ValueError("--prompt-store mlflow+http://... needs MLflow: pip install 'promptcache[mlflow]'") from None
        self.uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._error = MlflowException

    def _name(self, tenant: str, prompt_id: str) -> str:
        return f"promptcache.{_digest(tenant)}.{prompt_id}"

    def _call(self, fn, *args, missing=None, **kwargs):
        """One client call: `missing` for an MLflow "does not exist", StoreUnavailable for a
        server that cannot be reached or fails."""
        try:
            return fn(*args, **kwargs)
        except self._error as exc:
            if getattr(exc, "error_code", None) in _MISSING or "not found" in str(exc).lower():
                return missing
            raise StoreUnavailable(f"MLflow at {self.uri}: {exc.error_code}") from None
        except OSError as exc:  # requests' connection errors are OSErrors
            raise StoreUnavailable(f"MLflow at {self.uri}: {type(exc).__name__}") from None

    def _version(self, prompt_id: str, found) -> PromptVersion:
        return PromptVersion(prompt_id, int(found.version), found.template,
                             (found.tags or {}).get(WARM_TAG) == "true", (found.creation_timestamp or 0) / 1000)

    def _ours(self, tenant: str, prompt_id: str):
        """The MLflow prompt of this tenant's id, or None (also for a prompt without our tags)."""
        found = self._call(self._client.get_prompt, self._name(tenant, prompt_id))
        if found is None or (found.tags or {}).get(TENANT_TAG) != _digest(tenant):
            return None
        return found

    def create(self, tenant: str, prompt_id: str, name: str | None, template: str, warm: bool) -> PromptInfo:
        mlflow_name = self._name(tenant, prompt_id)
        tags = {TENANT_TAG: _digest(tenant), TENANT_NAME_TAG: tenant, **({NAME_TAG: name} if name else {})}
        self._call(self._client.create_prompt, mlflow_name, tags=tags)
        made = self._call(self._client.create_prompt_version, mlflow_name, template, tags={WARM_TAG: str(warm).lower()})
        self._call(self._client.set_prompt_alias, mlflow_name, ALIAS, int(made.version))
        return PromptInfo(prompt_id, tenant, name, int(made.version), int(made.version),
                          (made.creation_timestamp or 0) / 1000)

    def add_version(self, tenant: str, prompt_id: str, template: str, warm: bool) -> PromptVersion:
        if self._ours(tenant, prompt_id) is None:
            raise PromptNotFound(prompt_id)
        made = self._call(self._client.create_prompt_version, self._name(tenant, prompt_id), template,
                          tags={WARM_TAG: str(warm).lower()})
        return self._version(prompt_id, made)

    def _all_versions(self, tenant: str, prompt_id: str) -> list:
        found = self._call(self._client.search_prompt_versions, self._name(tenant, prompt_id), missing=None)
        return sorted(found or [], key=lambda v: int(v.version))

    def info(self, tenant: str, prompt_id: str) -> PromptInfo | None:
        prompt = self._ours(tenant, prompt_id)
        if prompt is None:
            return None
        versions = self._all_versions(tenant, prompt_id)
        default = self._call(self._client.get_prompt_version_by_alias, prompt.name, ALIAS)
        if not versions or default is None:
            return None
        created = (versions[0].creation_timestamp or 0) / 1000
        return PromptInfo(prompt_id, tenant, (prompt.tags or {}).get(NAME_TAG), int(default.version),
                          int(versions[-1].version), created)

    def version(self, tenant: str, prompt_id: str, version: int | None = None) -> PromptVersion | None:
        """One call to MLflow (the name holds the tenant's digest): this is every request's."""
        name = self._name(tenant, prompt_id)
        if version is None:
            found = self._call(self._client.get_prompt_version_by_alias, name, ALIAS)
        else:
            found = self._call(self._client.get_prompt_version, name, version)
        return None if found is None else self._version(prompt_id, found)

    def versions(self, tenant: str, prompt_id: str) -> list[PromptVersion]:
        if self._ours(tenant, prompt_id) is None:
            return []
        return [self._version(prompt_id, v) for v in self._all_versions(tenant, prompt_id)]

    def _search(self, tenant_digest: str | None) -> list:
        where = f"tags.`{TENANT_TAG}` = '{tenant_digest}'" if tenant_digest else f"tags.`{TENANT_TAG}` LIKE '%'"
        found, token = [], None
        while True:
            page = self._call(self._client.search_prompts, filter_string=where, max_results=1000, page_token=token)
            found += list(page or [])
            token = getattr(page, "token", None)
            if not token:
                return found

    def prompts(self, tenant: str) -> list[PromptInfo]:
        prefix = f"promptcache.{_digest(tenant)}."
        ids = [p.name.removeprefix(prefix) for p in self._search(_digest(tenant)) if p.name.startswith(prefix)]
        infos = [self.info(tenant, prompt_id) for prompt_id in ids]
        return sorted((i for i in infos if i is not None), key=lambda i: (i.created_at, i.id))

    def count(self, tenant: str) -> int:
        return len(self._search(_digest(tenant)))

    def stored_chars(self, tenant: str) -> int:
        """Not counted: summing every version would cost a call per prompt on each registration.
        MLflow is the operator's own store; the prompt and version counts still bound a tenant."""
        return 0

    def set_default(self, tenant: str, prompt_id: str, version: int) -> PromptInfo:
        if self.version(tenant, prompt_id, version) is None:
            raise PromptNotFound(prompt_id)
        self._call(self._client.set_prompt_alias, self._name(tenant, prompt_id), ALIAS, version)
        return info_after_change(self, tenant, prompt_id)

    def delete(self, tenant: str, prompt_id: str) -> list[PromptVersion]:
        versions = self.versions(tenant, prompt_id)
        name = self._name(tenant, prompt_id)
        for version in versions:
            self._call(self._client.delete_prompt_version, name, str(version.version))
        if versions:
            self._call(self._client.delete_prompt, name)
        return versions

    def warm_versions(self) -> list[tuple[str, PromptVersion]]:
        out = []
        for prompt in self._search(None):
            tenant = (prompt.tags or {}).get(TENANT_NAME_TAG)
            prefix = f"promptcache.{_digest(tenant or '')}."
            if tenant is None or not prompt.name.startswith(prefix):
                continue
            prompt_id = prompt.name.removeprefix(prefix)
            out += [(tenant, v) for v in self.versions(tenant, prompt_id) if v.warm]
        return sorted(out, key=lambda item: item[1].created_at)
