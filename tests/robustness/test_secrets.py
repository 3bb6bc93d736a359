"""The Hub token is used for the push call and nothing else: never logged, stored, echoed or kept."""

import gc
import logging

import pytest

from gptlab.cli import main as cli_main
from gptlab.hub import export

TOKEN = "hf_" + "Zq9" * 12  # a made-up token, easy to grep for


class FakeApi:
    """Records what the push sends, and fails the upload the way the Hub does, quoting the request."""
    def __init__(self, fail: bool):
        self.fail, self.calls = fail, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", kwargs.get("token")))
        return type("Url", (), {"repo_id": repo_id, "__str__": lambda s: f"https://huggingface.co/{repo_id}"})()

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs.get("token")))
        if self.fail:
            raise RuntimeError(f"401 Unauthorized for url with Authorization: Bearer {TOKEN}")


@pytest.mark.parametrize("fail", [False, True])
def test_the_token_reaches_only_the_push_calls(tiny_run, tmp_path, monkeypatch, capsys, caplog, fail):
    api = FakeApi(fail)
    monkeypatch.setattr(export, "HfApi", lambda: api)
    caplog.set_level(logging.DEBUG)
    code = cli_main(["push", "--checkpoint", str(tiny_run), "--repo-id", "alice/tiny", "--token", TOKEN])
    out, err = capsys.readouterr()
    assert code == (2 if fail else 0)
    assert api.calls == [("create_repo", TOKEN), ("upload_folder", TOKEN)][: 2]
    assert TOKEN not in out + err and TOKEN not in caplog.text
    if fail:
        assert "401" in err or "token" in err.lower()
    for path in tiny_run.rglob("*"):  # nothing in the run folder holds it
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, str) and o == TOKEN and o is not TOKEN]
