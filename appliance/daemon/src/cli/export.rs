//! `fieldmesh export`: a consistent copy of the appliance's durable state (bindings, stored
//! messages, voicemails), taken while the daemon may be running. The copy is an ordinary
//! SQLite file: `sqlite3 copy.db .dump` reads it, and putting it in place of
//! `<state dir>/fieldmesh.db` while the daemon is stopped restores it.

use crate::config::{ConfigFile, Flags};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(crate) fn run(config: Option<PathBuf>, state_dir: Option<PathBuf>, out: &Path) -> ExitCode {
    let flags = Flags {
        config,
        state_dir,
        ..Flags::default()
    };
    let config = match ConfigFile::load(&flags) {
        Ok(c) => c.resolve(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !config.state_dir.join(store::Db::FILE).exists() {
        eprintln!(
            "fieldmesh export: no database in {} (state.dir)",
            config.state_dir.display()
        );
        return ExitCode::from(2);
    }
    let result = store::Db::open(&config.state_dir).and_then(|mut db| db.export(out));
    match result {
        Ok(()) => {
            println!(
                "exported {} to {}",
                config.state_dir.join(store::Db::FILE).display(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fieldmesh export: {e}");
            ExitCode::FAILURE
        }
    }
}
