//! A table that is the section of no registered backend is kept and
//! ignored (one file serves every node), but logged once as a warning,
//! naming the close registered name: a misspelling must not pass unnoticed.

use pubsub_core::{Config, PubSub};
use pubsub_testkit::logs;

#[tokio::test]
async fn a_misspelt_section_is_warned_about_once() {
    logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "backend = \"memory\"\n[memroy]\nnamespace = \"x\"\n[kafka]\nbrokers = [\"k:9092\"]\n",
    )
    .unwrap();
    let config = Config::from_file(&file).expect("unknown sections do not fail the load");
    for _ in 0..3 {
        let ps = PubSub::connect(&config).await.expect("connect");
        ps.close().await.unwrap();
    }
    let log = logs::captured();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    let memroy: Vec<&&str> = warnings.iter().filter(|l| l.contains("[memroy]")).collect();
    assert_eq!(
        memroy.len(),
        1,
        "one warning, not one per connect: {warnings:#?}"
    );
    assert!(
        memroy[0].contains("did you mean [memory]?"),
        "{}",
        memroy[0]
    );
    let kafka: Vec<&&str> = warnings.iter().filter(|l| l.contains("[kafka]")).collect();
    assert_eq!(kafka.len(), 1, "{warnings:#?}");
    assert!(!kafka[0].contains("did you mean"), "{}", kafka[0]);
}
