//! Reading the configuration file without trusting it: only a regular file,
//! at most [`MAX_CONFIG_BYTES`], UTF-8; and telling an empty file apart from
//! a file with errors.

use std::fs::{File, FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest configuration file leaderd reads. Real ones are a few KiB;
/// the bound keeps `--config /dev/zero` or a wrong path from eating memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The file's text, or a sentence saying why it cannot be a configuration.
pub fn read_text(path: &Path) -> Result<String, String> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer before we can
    // refuse it. It changes nothing for a regular file.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| format!("cannot read the file: {err}"))?;
    let metadata = file
        .metadata()
        .map_err(|err| format!("cannot read the file: {err}"))?;
    if !metadata.is_file() {
        return Err(format!(
            "is {}, not a regular file: give the path of a YAML file",
            kind(metadata.file_type())
        ));
    }
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(too_big(&format!("{} bytes", metadata.len())));
    }
    let bytes = read_at_most(file, MAX_CONFIG_BYTES)?;
    String::from_utf8(bytes).map_err(|err| {
        format!(
            "is not UTF-8 text (invalid byte at offset {})",
            err.utf8_error().valid_up_to()
        )
    })
}

/// Reads up to `limit` bytes; a file that grew past it while we read is
/// refused like one that was too big from the start.
fn read_at_most(file: File, limit: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read the file: {err}"))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(too_big("larger than that"));
    }
    Ok(bytes)
}

fn too_big(size: &str) -> String {
    format!(
        "is {size}: leaderd reads at most {} KiB (1 MiB) of configuration; a real one is a few KiB",
        MAX_CONFIG_BYTES / 1024
    )
}

fn kind(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a pipe (FIFO)"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// When `text` failed to parse as a configuration because it is not a YAML
/// mapping at all (empty, only comments, a list, a single word), says so;
/// serde's "missing field `election`" would only puzzle.
pub fn not_a_document(text: &str) -> Option<String> {
    match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::Null) => Some(
            "the file is empty (or holds only comments): it needs at least election.name and a \
             backend section; config/leaderd.yaml documents every key"
                .to_string(),
        ),
        Ok(serde_yaml::Value::Mapping(_)) | Err(_) => None,
        Ok(_) => Some(
            "is not a YAML mapping of sections (election:, backend:, …); config/leaderd.yaml \
             documents every key"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_non_mapping_documents_are_named() {
        for empty in [
            "",
            "\n\n",
            "# only a comment\n  # another\n",
            "---\n",
            "~\n",
        ] {
            let reason = not_a_document(empty).unwrap_or_default();
            assert!(reason.contains("the file is empty"), "{empty:?}: {reason}");
        }
        for other in ["- a\n- b\n", "election\n"] {
            let reason = not_a_document(other).unwrap_or_default();
            assert!(reason.contains("not a YAML mapping"), "{other:?}: {reason}");
        }
        assert_eq!(not_a_document("election: {}\n"), None);
    }

    #[test]
    fn special_files_are_refused_without_reading_them() {
        let zero = read_text(Path::new("/dev/zero")).expect_err("/dev/zero");
        assert!(zero.contains("a character device"), "{zero}");
        let dir = read_text(Path::new("/")).expect_err("/");
        assert!(dir.contains("a directory"), "{dir}");
    }
}
