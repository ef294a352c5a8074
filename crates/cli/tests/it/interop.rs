//! The tables as analysts read them: DuckDB and pyarrow over the Hive-partitioned dataset.
//!
//! Needs Python with `duckdb` and `pyarrow` (`.ci/test` installs them and sets
//! `LOGCENSUS_REQUIRE_INTEROP=1`, which turns a missing reader into a failure instead of a skip).

use super::*;

fn python_has_readers() -> bool {
    Command::new("python3")
        .args(["-c", "import duckdb, pyarrow"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn duckdb_and_pyarrow_read_the_dataset() {
    if !python_has_readers() {
        assert!(
            std::env::var_os("LOGCENSUS_REQUIRE_INTEROP").is_none(),
            "python3 with duckdb and pyarrow is required (run `bash .ci/test`, which installs them)"
        );
        eprintln!("skipped: python3 with duckdb and pyarrow not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    ok(&logcensus(&[
        "run",
        "--pipeline",
        root()
            .join("pipelines/internal-daily.toml")
            .to_str()
            .unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let expected_requests = sum(&out, "traffic_by_region", "requests");
    let expected_days = rows(&out, "traffic_quality").len();
    let script = r#"
import sys, duckdb, pyarrow.dataset as ds
out = sys.argv[1]
con = duckdb.connect()
total, days, ts_type = con.execute(f"""
    SELECT sum(requests), count(DISTINCT date), any_value(typeof(period_start))
    FROM read_parquet('{out}/traffic_by_region/*/*.parquet', hive_partitioning = true)
""").fetchone()
meta = con.execute(f"""
    SELECT decode(value) FROM parquet_kv_metadata('{out}/clients/*/*.parquet')
    WHERE decode(key) = 'logcensus.pipeline' LIMIT 1
""").fetchone()[0]
t = ds.dataset(f"{out}/traffic_quality", format="parquet", partitioning="hive").to_table()
print(total, days, ts_type, meta, t.num_rows, t.schema.field("period_start").type)
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&out)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!(
            "{expected_requests} {expected_days} TIMESTAMP WITH TIME ZONE internal-daily {expected_days} timestamp[us, tz=UTC]"
        )
    );
}
