"""What a user gets wrong when starting workers: one sentence, non-zero exit, and nothing marked done."""

import json

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.services


@pytest.fixture
def s3_env(pg_farm, s3_credentials, seaweed):
    pg_farm(storage_url=f"s3://{seaweed.bucket}/errors", **s3_credentials)
    return pg_farm


@pytest.mark.parametrize(
    ("setting", "value", "message", "code"),
    [  # exit 4: a service is unreachable; 3: bad input
        ("broker_url", "redis://127.0.0.1:1/0", "cannot reach the broker at redis://127.0.0.1:1/0", 4),
        (
            "database_url",
            "postgresql://postgres@127.0.0.1:1/farm",
            "cannot reach the database at postgresql+psycopg://postgres@127.0.0.1:1/farm",
            4,
        ),
        ("s3_endpoint_url", "http://127.0.0.1:1", "cannot reach S3 at http://127.0.0.1:1", 4),
        ("storage_url", "s3://no-such-bucket/x", "the bucket 'no-such-bucket' does not exist", 3),
    ],
)
def test_worker_refuses_to_start_with_one_clear_sentence(farm, s3_env, setting, value, message, code):
    assert farm("db", "upgrade").code == 0
    s3_env(**{setting: value})
    result = farm("worker")
    assert result.code == code and message in result.err, result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err


def test_wrong_s3_credentials(farm, s3_env, monkeypatch):
    assert farm("db", "upgrade").code == 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    result = farm("worker")
    assert result.code == 3 and "credentials" in result.err and "AWS_SECRET_ACCESS_KEY" in result.err, (
        result.err
    )


def test_a_clip_whose_asset_is_not_in_storage_fails_with_the_reason_and_is_not_done(
    farm, s3_env, pg_url, seaweed
):
    from farm.core.settings import get_settings
    from farm.core.storage import open_storage
    from farm.render.client import BlenderProcessRenderer
    from farm.render.job import RenderOptions
    from worker.output import blender_files_producer
    from worker.process import WorkerContext, process_clip

    assert farm("db", "upgrade").code == 0
    with create_engine(pg_url).begin() as conn:
        conn.execute(
            text("TRUNCATE catalogs, clips, clip_events, workers, farm_settings RESTART IDENTITY CASCADE")
        )
    farm("catalog", "import", "builtin")
    assert (
        json.loads(farm("enqueue", "--sequences", "builtin_all", "--limit", "1", "--json").out)["new_clips"]
        == 1
    )
    missing = f"s3://{seaweed.bucket}/errors/textures/missing.jpg"
    with create_engine(pg_url).begin() as conn:
        spec = conn.execute(text("SELECT spec FROM clips")).scalar()
        conn.execute(
            text("UPDATE clips SET spec = :spec"), {"spec": json.dumps({**spec, "texture": missing})}
        )
    settings = get_settings()
    renderer = BlenderProcessRenderer(RenderOptions.from_settings(settings))
    try:
        context = WorkerContext(
            settings, "errors:1", blender_files_producer(renderer, settings), open_storage(settings)
        )
        assert process_clip(1, context) == "queued"  # the first attempts give it back, the last fails it
        with create_engine(pg_url).connect() as conn:
            status, error, attempts = conn.execute(text("SELECT status, error, attempts FROM clips")).one()
    finally:
        renderer.close()
    assert status == "queued" and attempts == 1
    assert f"the asset {missing} is not in storage" in error
    assert (
        seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix="errors/builtin").get("KeyCount", 0)
        == 0
    )
