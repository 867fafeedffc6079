"""Organisations, people and API tokens.

The org tree is seeded from a YAML file (``sitewatch backlog import-org FILE``; see
``backlog/fixtures/demo_org.yaml``). Import is an upsert keyed by codes and names, so re-importing the same file
changes nothing and an edited file changes only what was edited — each change an audit event with before/after.

Tokens: 32 random bytes, shown once; only their SHA-256 is stored (a random token needs no slow hash).
There is no default token: the first one is made with ``sitewatch api token create --user NAME``.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from backlog.authz import Actor
from backlog.errors import Invalid, NotFound
from backlog.models import ROLES, ApiToken, AuditEvent, Device, OrgUnit, Project, User, UserSite
from backlog.store import Backlog


def _audit(s: Session, b: Backlog, actor: str, entity: str, entity_id: Any, action: str,
           before: dict | None, after: dict | None) -> None:
    s.add(AuditEvent(at_ms=b.clock(), actor=actor, entity=entity, entity_id=str(entity_id), action=action,
                     before=before, after=after))


def _upsert(s: Session, b: Backlog, actor: str, model, key: dict[str, Any], values: dict[str, Any], entity: str):
    """Create or update one row; audit only real changes."""
    row = s.scalars(select(model).filter_by(**key)).first()
    if row is None:
        row = model(**key, **values)
        s.add(row)
        s.flush()
        _audit(s, b, actor, entity, row.id, "created", None, {**key, **values})
        return row
    before = {k: getattr(row, k) for k, v in values.items() if getattr(row, k) != v}
    if before:
        for k in before:
            setattr(row, k, values[k])
        _audit(s, b, actor, entity, row.id, "updated", before, {k: values[k] for k in before})
    return row


def import_org(b: Backlog, source: Path | str | dict, actor: str = "import") -> dict[str, int]:
    """Import (upsert) the city → district → company → project/site → device tree and users."""
    doc = source if isinstance(source, dict) else yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "city" not in doc:
        raise Invalid("org file must be a mapping with a 'city' entry")
    counts = {"districts": 0, "companies": 0, "projects": 0, "devices": 0, "users": 0}
    with b.session.begin() as s:
        city = _upsert(s, b, actor, OrgUnit, {"code": doc["city"]["code"]},
                       {"kind": "city", "name": doc["city"].get("name", doc["city"]["code"]), "parent_id": None},
                       "org_unit")
        companies: dict[str, OrgUnit] = {}
        for d in doc.get("districts", []):
            district = _upsert(s, b, actor, OrgUnit, {"code": d["code"]},
                               {"kind": "district", "name": d.get("name", d["code"]), "parent_id": city.id}, "org_unit")
            counts["districts"] += 1
            for c in d.get("companies", []):
                company = _upsert(s, b, actor, OrgUnit, {"code": c["code"]},
                                  {"kind": "company", "name": c.get("name", c["code"]), "parent_id": district.id},
                                  "org_unit")
                companies[c["code"]] = company
                counts["companies"] += 1
                for p in c.get("projects", []):
                    pd = district
                    if p.get("district"):
                        pd = s.scalars(select(OrgUnit).where(OrgUnit.code == p["district"],
                                                             OrgUnit.kind == "district")).first()
                        if pd is None:
                            raise Invalid(f"project {p['site']}: unknown district {p['district']}")
                    _upsert(s, b, actor, Project, {"site": p["site"]},
                            {"name": p.get("name", p["site"]), "company_id": company.id, "district_id": pd.id},
                            "project")
                    counts["projects"] += 1
                    for dev in p.get("devices", []):
                        _upsert(s, b, actor, Device, {"site": p["site"], "code": dev["code"]},
                                {"family": dev["family"], "name": dev.get("name", "")}, "device")
                        counts["devices"] += 1
        for u in doc.get("users", []):
            role = u.get("role")
            if role not in ROLES:
                raise Invalid(f"user {u.get('name')}: role must be one of {', '.join(ROLES)}")
            company_id = None
            if role == "company_manager":
                code = u.get("company")
                company = companies.get(code) or s.scalars(select(OrgUnit).where(OrgUnit.code == code)).first()
                if company is None:
                    raise Invalid(f"user {u['name']}: company_manager needs a known company (got {code!r})")
                company_id = company.id
            user = _upsert(s, b, actor, User, {"name": u["name"]},
                           {"display_name": u.get("display_name", u["name"]), "role": role,
                            "company_id": company_id, "active": bool(u.get("active", True))}, "user")
            counts["users"] += 1
            wanted = set(u.get("sites", [])) if role == "site_officer" else set()
            have = set(s.scalars(select(UserSite.site).where(UserSite.user_id == user.id)))
            if wanted != have:
                for site in have - wanted:
                    s.delete(s.get(UserSite, (user.id, site)))
                for site in wanted - have:
                    s.add(UserSite(user_id=user.id, site=site))
                _audit(s, b, actor, "user", user.id, "sites_changed", {"sites": sorted(have)}, {"sites": sorted(wanted)})
    return counts


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(b: Backlog, user_name: str, label: str = "", actor: str = "cli") -> str:
    """Make an API token for a user; returns the token (the only time it is ever visible)."""
    token = "sw_" + secrets.token_urlsafe(32)
    with b.session.begin() as s:
        user = s.scalars(select(User).where(User.name == user_name)).first()
        if user is None:
            raise NotFound(f"no user named {user_name!r} (import an org file first)")
        row = ApiToken(user_id=user.id, token_hash=_hash(token), prefix=token[:10], label=label,
                       created_ms=b.clock())
        s.add(row)
        s.flush()
        _audit(s, b, actor, "api_token", row.id, "created", None,
               {"user": user_name, "prefix": row.prefix, "label": label})
    return token


def revoke_token(b: Backlog, prefix: str, actor: str = "cli") -> int:
    with b.session.begin() as s:
        rows = list(s.scalars(select(ApiToken).where(ApiToken.prefix == prefix, ApiToken.revoked_ms.is_(None))))
        for row in rows:
            row.revoked_ms = b.clock()
            _audit(s, b, actor, "api_token", row.id, "revoked", {"revoked_ms": None}, {"revoked_ms": row.revoked_ms})
        return len(rows)


def actor_for(s: Session, user: User) -> Actor:
    """The user's view of the world: a site officer's sites, a company manager's company's sites, or all."""
    if user.role == "site_officer":
        sites = frozenset(s.scalars(select(UserSite.site).where(UserSite.user_id == user.id)))
    elif user.role == "company_manager":
        sites = frozenset(s.scalars(select(Project.site).where(Project.company_id == user.company_id)))
    else:
        sites = None
    return Actor(user.name, user.role, sites)


def authenticate(b: Backlog, token: str) -> Actor | None:
    """The actor a bearer token stands for, or None (unknown, revoked, or user deactivated)."""
    with b.session() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.token_hash == _hash(token),
                                               ApiToken.revoked_ms.is_(None))).first()
        if row is None:
            return None
        user = s.get(User, row.user_id)
        if user is None or not user.active:
            return None
        return actor_for(s, user)


def actor_by_name(b: Backlog, name: str) -> Actor:
    with b.session() as s:
        user = s.scalars(select(User).where(User.name == name)).first()
        if user is None:
            raise NotFound(f"no user named {name!r}")
        return actor_for(s, user)


def audit_trail(b: Backlog, entity: str | None = None, limit: int = 200) -> list[AuditEvent]:
    with b.session() as s:
        q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if entity:
            q = q.where(AuditEvent.entity == entity)
        return list(s.scalars(q))
