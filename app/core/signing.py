"""The service's signing key (ES256): signs audit checkpoints and consent receipts.

ES256 rather than EdDSA: RFC 9864 deprecates the "EdDSA" name and the replacement
("Ed25519") is not yet understood by common verifiers; ES256 is verified everywhere.
The key comes from CONSENT_SIGNING_KEY_PEM; in development it is generated once into the
data directory. It is never stored in the database, so a database writer cannot forge
a checkpoint.
"""

import json
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey

from app.core.config import Settings

ALGORITHM = "ES256"
KEY_FILE = "signing-key.pem"


class Signer:
    """Signs with the current key; verifies with it or any retired key (rotation, issue 14).

    Retired keys (CONSENT_SIGNING_PREVIOUS_KEYS_PEM, public PEMs suffice) stay in the JWKS,
    so receipts and checkpoints signed before a rotation still verify, inside the service
    and for anyone holding a receipt."""

    def __init__(self, key: ECKey, previous: tuple[ECKey, ...] = ()) -> None:
        self._key = key
        self.public_key = ECKey.import_key(key.as_dict(private=False))
        self.kid = key.thumbprint()
        self._verifiers = {self.kid: self.public_key}
        for old in previous:
            public = ECKey.import_key(old.as_dict(private=False))
            self._verifiers.setdefault(public.thumbprint(), public)

    def sign(self, payload: dict[str, Any]) -> str:
        """A compact JWS over the canonical JSON of payload."""
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        header = {"alg": ALGORITHM, "kid": self.kid}
        return jws.serialize_compact(header, body, self._key, algorithms=[ALGORITHM])

    def verify(self, token: str) -> dict[str, Any] | None:
        """The payload if the signature is ours and valid, else None."""
        try:
            kid = jws.extract_compact(token.encode()).headers().get("kid")
            key = self._verifiers.get(kid) if isinstance(kid, str) else None
            if key is None:
                return None
            obj = jws.deserialize_compact(token, key, algorithms=[ALGORITHM])
        except Exception:
            return None
        payload: dict[str, Any] = json.loads(obj.payload)
        return payload

    def jwks(self) -> dict[str, Any]:
        """The current key first, then the retired ones."""
        return {
            "keys": [
                {**key.as_dict(private=False), "kid": kid, "alg": ALGORITHM, "use": "sig"}
                for kid, key in self._verifiers.items()
            ]
        }


def _load_or_create(data_dir: Path, pem: str | None) -> ECKey:
    if pem is not None:
        return ECKey.import_key(pem)
    path = data_dir.expanduser().resolve() / KEY_FILE
    if path.exists():
        return ECKey.import_key(path.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ECKey.generate_key("P-256", private=True)
    # Workers start at once (`serve --workers N`): the key is written whole to a file of this
    # process's own, then linked into place, which succeeds for one process only; the others
    # read the key that won. Nobody ever reads a half-written key file.
    draft = path.with_name(f"{KEY_FILE}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key.as_pem(private=True))
            f.flush()
            os.fsync(f.fileno())
        os.link(draft, path)
    except FileExistsError:
        return ECKey.import_key(path.read_bytes())
    finally:
        draft.unlink(missing_ok=True)
    return key


def split_pems(text: str) -> tuple[str, ...]:
    """Several PEM blocks (public or private) in one setting, in any order."""
    blocks, current = [], []
    for line in text.strip().splitlines():
        current.append(line)
        if line.startswith("-----END "):
            blocks.append("\n".join(current) + "\n")
            current = []
    return tuple(blocks)


@lru_cache(maxsize=8)
def _signer_for(data_dir: str, pem: str | None, previous: tuple[str, ...] = ()) -> Signer:
    return Signer(
        _load_or_create(Path(data_dir), pem), tuple(ECKey.import_key(p) for p in previous)
    )


def get_signer(settings: Settings) -> Signer:
    pem = settings.signing_key_pem.get_secret_value() if settings.signing_key_pem else None
    previous = split_pems(settings.signing_previous_keys_pem or "")
    return _signer_for(str(settings.data_dir), pem, previous)
