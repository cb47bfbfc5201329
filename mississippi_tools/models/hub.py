"""Find a checkpoint: a local directory, or a hub snapshot fetched with ``huggingface_hub``."""

from __future__ import annotations

import re
from pathlib import Path

from mississippi_tools.errors import ModelLoadError, ModelNotFoundError

__all__ = ["DEFAULT_MODEL", "is_hub_id", "resolve_model_dir"]

#: The model used when none is named.
DEFAULT_MODEL = "h2oai/h2ovl-mississippi-800m"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_dir(
    model: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    allow_pickle: bool = False,
    progress: bool = True,
) -> Path:
    """A local directory holding the checkpoint: ``model`` itself, or the hub snapshot.

    Hub downloads go through ``huggingface_hub`` (revision, cache dir, progress bars,
    ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` honoured). Without weights locally and without a way to
    fetch them, :class:`ModelNotFoundError` names the model, the cache dir and the command to run.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but has no config.json")
        return path
    text = str(model)
    if not _HUB_ID.match(text) or path.exists():
        raise ModelNotFoundError(
            f"{text!r} is neither a checkpoint directory nor a hub id like "
            "'h2oai/h2ovl-mississippi-800m'"
        )
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils.tqdm import disable_progress_bars, enable_progress_bars

    patterns = ["*.json", "*.safetensors", "tokenizer.model"]
    if allow_pickle:
        patterns.append("*.bin")
    cache = str(cache_dir) if cache_dir else constants.HF_HUB_CACHE
    where = f"{text}" + (f" at revision {revision}" if revision else "")
    hint = (
        f"Download it where the hub is reachable with `mississippi-tools download {text}"
        + (f" --revision {revision}" if revision else "")
        + (f" --cache-dir {cache}" if cache_dir else "")
        + "`, or pass a local checkpoint directory"
    )
    if not progress:
        disable_progress_bars()
    try:
        snapshot = snapshot_download(
            text,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=patterns,
            local_files_only=bool(local_files_only),
        )
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as e:
        raise ModelNotFoundError(
            f"the hub has no accessible model {where}: {_first_line(e)}"
        ) from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise ModelNotFoundError(
            f"model {where} is not in the cache at {cache} and the hub is not reachable "
            f"(offline mode or no network). {hint}"
        ) from e
    except (HfHubHTTPError, OSError) as e:
        raise ModelNotFoundError(
            f"could not download model {where} into {cache}: {_first_line(e)}. {hint}"
        ) from e
    finally:
        if not progress:
            enable_progress_bars()
    if isinstance(snapshot, list):  # dry_run form; never requested here
        raise ModelLoadError("unexpected dry-run answer from huggingface_hub")
    return Path(snapshot)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the shape of a hub repository id (``owner/name``)."""
    return bool(_HUB_ID.match(text)) and not Path(text).expanduser().exists()
