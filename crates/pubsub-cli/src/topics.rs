//! `pubsub topics`: the msight topic registry (the Redis hash
//! `MSIGHT:TOPICS` the Python nodes keep), whichever backend carries the
//! messages: its Redis is the `[redis]` section's, with its
//! `MSIGHT_REDIS_MESSAGE_BROKER_*` variables, as in the Python original.

use clap::{Args, Subcommand, ValueEnum};
use pubsub_core::{Config, Topic};
use pubsub_redis::{BlockingTopicRegistry, TOPICS_KEY};

use crate::error::CliError;
use crate::output::say;

/// List, show or register the topics of the msight registry.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(subcommand)]
    pub command: TopicsCommand,

    /// How to print topics
    #[arg(long, global = true, value_enum, ignore_case = true, default_value_t = TopicsFormat::Table)]
    pub format: TopicsFormat,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Every registered topic, sorted by name. A malformed entry is
    /// reported on standard error and the listing goes on (exit code 1).
    List,
    /// The topic registered under NAME (exit code 1 if there is none).
    Get {
        /// The topic's name
        name: String,
    },
    /// Register NAME, or update it if it is there (as Python's
    /// `Topic.register()`); then print what is stored.
    Register {
        /// The topic's name
        name: String,
        /// The payload type: for Python nodes, the dotted path of an
        /// `msight_core.data` class, e.g. msight_core.data.image.ImageData
        #[arg(long, value_name = "TYPE")]
        data_type: String,
        /// What the topic carries
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Leave an existing entry as it is (Python's `get_topic(...,
        /// register_if_not_exist=True)`) and print it
        #[arg(long)]
        if_missing: bool,
    },
}

/// How `topics` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TopicsFormat {
    /// Aligned columns: name, data type, description ("-" for none).
    Table,
    /// JSON: `list` an array, `get` and `register` one object, each
    /// `{"name", "description", "data_type"}` as the registry holds it.
    Json,
}

pub fn run(args: &TopicsArgs, config: &Config) -> Result<(), CliError> {
    let registry = BlockingTopicRegistry::connect(config)?;
    match &args.command {
        TopicsCommand::List => list(&registry, args.format),
        TopicsCommand::Get { name } => match registry.get(name)? {
            Some(topic) => {
                print(&[topic], args.format, false);
                Ok(())
            }
            None => Err(CliError::Failed(format!(
                "no topic {name:?} in the registry ({TOPICS_KEY})"
            ))),
        },
        TopicsCommand::Register {
            name,
            data_type,
            description,
            if_missing,
        } => {
            let mut topic = Topic::new(name.as_str())?.with_data_type(data_type.as_str());
            if let Some(d) = description {
                topic = topic.with_description(d.as_str());
            }
            let stored = if *if_missing {
                registry.get_or_register(&topic)?
            } else {
                registry.register(&topic)?;
                topic
            };
            print(&[stored], args.format, false);
            Ok(())
        }
    }
}

/// Print every readable entry; report the malformed ones on stderr, and
/// fail (exit code 1) if there was one.
fn list(registry: &BlockingTopicRegistry, format: TopicsFormat) -> Result<(), CliError> {
    let mut topics = Vec::new();
    let mut malformed = 0usize;
    for entry in registry.list()? {
        match entry {
            Ok(t) => topics.push(t),
            Err(e) => {
                malformed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    print(&topics, format, true);
    match malformed {
        0 => Ok(()),
        n => Err(CliError::Failed(format!(
            "{n} malformed entr{} in {TOPICS_KEY} (above); the other {} listed",
            if n == 1 { "y" } else { "ies" },
            topics.len()
        ))),
    }
}

/// `topics` in `format`; `as_list`: a JSON array even for one.
fn print(topics: &[Topic], format: TopicsFormat, as_list: bool) {
    match format {
        TopicsFormat::Json if as_list => say!("{}", json(&topics)),
        TopicsFormat::Json => topics.iter().for_each(|t| say!("{}", json(t))),
        TopicsFormat::Table => {
            for line in table(topics) {
                say!("{line}");
            }
        }
    }
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // A Topic is strings and nulls: serialising it cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// A header and a row per topic, in aligned columns.
fn table(topics: &[Topic]) -> Vec<String> {
    let rows: Vec<[&str; 3]> = topics
        .iter()
        .map(|t| {
            [
                t.name(),
                t.data_type().unwrap_or("-"),
                t.description().unwrap_or("-"),
            ]
        })
        .collect();
    let header = ["NAME", "DATA TYPE", "DESCRIPTION"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    std::iter::once(header)
        .chain(rows)
        .map(|[a, b, c]| format!("{a:<w0$}  {b:<w1$}  {c}").trim_end().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_shows_dashes_for_none() {
        let topics = [
            Topic::new("camera.front")
                .unwrap()
                .with_data_type("msight_core.data.image.ImageData")
                .with_description("front camera"),
            Topic::new("lidar").unwrap(),
        ];
        assert_eq!(
            table(&topics),
            [
                "NAME          DATA TYPE                         DESCRIPTION",
                "camera.front  msight_core.data.image.ImageData  front camera",
                "lidar         -                                 -",
            ]
        );
        assert_eq!(table(&[]), ["NAME  DATA TYPE  DESCRIPTION"]);
    }
}
