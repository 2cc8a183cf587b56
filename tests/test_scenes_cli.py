from __future__ import annotations

import json

from typer.testing import CliRunner

from tarsier.cli.app import app

runner = CliRunner()


def run(args, **kw):
    return runner.invoke(app, ["scenes", *args], **kw)


def test_csv_to_stdout(videos):
    r = run([str(videos["cuts"].path)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "video,clip,start,end"
    assert lines[1] == "cuts.mp4,0,0.000,2.000"
    assert len(lines) == 5 and lines[-1].endswith(",8.000")


def test_jsonl_to_file_and_options(videos, tmp_path):
    out = tmp_path / "clips.jsonl"
    r = run([str(videos["long"].path), "--scenes", "none", "--max-clip", "5", "--format", "jsonl",
             "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["start"], x["end"]) for x in rows] == [(0.0, 5.0), (5.0, 10.0)]
    assert rows[0]["video"] == "long.mp4" and rows[1]["clip"] == 1


def test_folder_with_bad_files_continues_and_exits_1(videos):
    folder = videos["empty"].parent     # bad/: empty.mp4, random.mp4, truncated.mp4, notes.txt
    r = run([str(folder), str(videos["cuts"].path), "--ext", "mp4,txt"])
    assert r.exit_code == 1
    assert "cuts.mp4" in r.stdout
    errs = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errs) == 4 and all("open:" in x for x in errs)


def test_missing_input_exit_1(tmp_path, videos):
    r = run([str(tmp_path / "nope.mp4"), str(videos["cuts"].path)])
    assert r.exit_code == 1 and "no such file" in r.stderr


def test_usage_errors_exit_2(videos):
    assert run([str(videos["cuts"].path), "--scenes", "bogus"]).exit_code == 2
    assert run([str(videos["cuts"].path), "--format", "xml"]).exit_code == 2
    assert run([str(videos["cuts"].path), "--min-clip", "10", "--max-clip", "5"]).exit_code == 2
    assert run([]).exit_code == 2


def test_stdin_list(videos):
    r = run(["-"], input=f"{videos['cuts'].path}\n\n{videos['vfr'].path}\n")
    assert r.exit_code == 0, r.output
    assert "cuts.mp4,3," in r.stdout and "vfr.mp4,2," in r.stdout


def test_module_import_is_light():
    import subprocess
    import sys

    code = ("import sys, tarsier.cli.scenes; "
            "heavy = [m for m in ('torch', 'av', 'cv2', 'scenedetect', 'numpy') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                       cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert r.returncode == 0, r.stdout + r.stderr
