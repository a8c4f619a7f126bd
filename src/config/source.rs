//! Reading the configuration file without trusting it: only a regular file,
//! at most [`MAX_CONFIG_BYTES`], UTF-8; and telling an empty file apart from
//! a file with errors.

use std::fs::{FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest configuration file leaderd reads. Real ones are a few KiB;
/// the bound keeps `--config /dev/zero` or a wrong path from eating memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The largest secret file (a password, a token) leaderd reads.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// The file's text, or a sentence saying why it cannot be a configuration.
pub fn read_text(path: &Path) -> Result<String, String> {
    let bytes = read_bounded(
        path,
        MAX_CONFIG_BYTES,
        "configuration; a real one is a few KiB",
    )
    .map_err(|reason| {
        if reason.ends_with("not a regular file") {
            format!("{reason}: give the path of a YAML file")
        } else {
            reason
        }
    })?;
    String::from_utf8(bytes).map_err(|err| {
        format!(
            "is not UTF-8 text (invalid byte at offset {})",
            err.utf8_error().valid_up_to()
        )
    })
}

/// The bytes of a regular file of at most `limit` bytes, or a sentence
/// saying why not. `what` ends the "too big" sentence ("leaderd reads at
/// most … of {what}"). Every file named in the configuration is read this
/// way: `/dev/zero` or a FIFO in the wrong field must not hang or eat
/// memory.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, String> {
    // Looked at before it is opened: opening a device can have effects of
    // its own (a watchdog, a tape), and a socket cannot be opened at all.
    // stat follows symlinks, as Kubernetes secret mounts need.
    let not_regular = |metadata: &std::fs::Metadata| {
        format!("is {}, not a regular file", kind(metadata.file_type()))
    };
    let metadata = std::fs::metadata(path).map_err(|err| format!("cannot read the file: {err}"))?;
    if !metadata.is_file() {
        return Err(not_regular(&metadata));
    }
    // O_NONBLOCK: if the path was swapped for a FIFO since, opening it must
    // not wait for a writer before we can refuse it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| format!("cannot read the file: {err}"))?;
    let metadata = file
        .metadata()
        .map_err(|err| format!("cannot read the file: {err}"))?;
    if !metadata.is_file() {
        return Err(not_regular(&metadata));
    }
    let too_big = |size: &str| {
        format!(
            "is {size}: leaderd reads at most {} of {what}",
            show_size(limit)
        )
    };
    if metadata.len() > limit {
        return Err(too_big(&format!("{} bytes", metadata.len())));
    }
    // A file that grows past the limit while we read is refused like one
    // that was too big from the start.
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read the file: {err}"))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(too_big("larger than that"));
    }
    Ok(bytes)
}

fn show_size(bytes: u64) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{} KiB", bytes / 1024)
    }
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

    #[test]
    fn a_file_over_the_limit_is_refused_with_the_limit_named() {
        let dir = std::env::temp_dir().join(format!("leaderd-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 70 * 1024]).expect("write");
        let err = read_bounded(&big, MAX_SECRET_BYTES, "a secret").expect_err("too big");
        assert!(
            err.contains("71680 bytes") && err.contains("64 KiB of a secret"),
            "{err}"
        );
        let err = read_bounded(&big, MAX_CONFIG_BYTES, "x").map(|b| b.len());
        assert_eq!(err, Ok(70 * 1024));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
