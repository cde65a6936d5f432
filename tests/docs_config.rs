//! The docs beside the code cannot drift from it:
//!
//! - `docs/src/configuration.md` holds, between marker comments, the `--help` of every
//!   command of the built `shop` binary (the clap definitions in `src/cli.rs` are the one
//!   place a setting is documented). A difference fails the test;
//!   `SHOP_BLESS_DOCS=1 cargo test --test docs_config` writes the block again.
//! - Every link between the book's chapters (and from the README into the book) names a
//!   file and a heading that exist, and every "§" reference in the code, the README and
//!   the docs names a section of the product contract (`docs/src/contract.md`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const BEGIN: &str = "<!-- BEGIN GENERATED: the --help of every command (tests/docs_config.rs) -->";
const END: &str = "<!-- END GENERATED -->";
const BLESS: &str = "SHOP_BLESS_DOCS";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `shop <args> --help`, as a user without any `SHOP_*` variable set sees it (clap
/// prints a set variable's value beside its flag).
fn help(args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    command.args(args).arg("--help");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SHOP_") {
            command.env_remove(name);
        }
    }
    let output = command.output().expect("run the shop binary");
    assert!(
        output.status.success(),
        "shop {} --help failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("    "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every command, depth first: `[]`, `["bench"]`, …, `["topics", "list"]`.
fn commands(prefix: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    let args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let text = help(&args);
    let children = subcommands(&text);
    out.push((prefix.clone(), text));
    for child in children {
        let mut next = prefix.clone();
        next.push(child);
        commands(next, out);
    }
}

/// The generated block: one section per command with its help verbatim.
fn generated() -> String {
    let mut all = Vec::new();
    commands(Vec::new(), &mut all);
    let mut block = String::new();
    for (args, text) in all {
        let name = if args.is_empty() {
            "shop".to_string()
        } else {
            format!("shop {}", args.join(" "))
        };
        block.push_str(&format!(
            "### `{name}`\n\n```text\n$ {name} --help\n{}\n```\n\n",
            text.trim_end()
        ));
    }
    block
}

#[test]
fn configuration_doc_is_the_help_of_every_command() {
    let path = root().join("docs/src/configuration.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/src/configuration.md");
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{} has no line {BEGIN}", path.display()))
        + BEGIN.len();
    let end = start
        + doc[start..]
            .find(END)
            .unwrap_or_else(|| panic!("{} has no line {END}", path.display()));
    let want = format!("\n\n{}", generated());
    if doc[start..end] == want {
        return;
    }
    if std::env::var_os(BLESS).is_some_and(|v| v == "1") {
        let blessed = format!("{}{want}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, blessed).expect("write docs/src/configuration.md");
        return;
    }
    let have = &doc[start..end];
    let (line, (was, is)) = have
        .lines()
        .zip(want.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i + 1, (a.to_string(), b.to_string())))
        .unwrap_or((
            have.lines().count().min(want.lines().count()) + 1,
            ("(end of one of them)".into(), "(end of one of them)".into()),
        ));
    panic!(
        "docs/src/configuration.md differs from the binary's --help (first at line {line} of the \
         generated block):\n  doc:    {was}\n  binary: {is}\nThe flags changed in src/cli.rs; \
         regenerate the block with:\n  SHOP_BLESS_DOCS=1 cargo test --test docs_config\n\
         (with the usual CARGO_TARGET_DIR) and commit docs/src/configuration.md."
    );
}

/// Lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// mdBook's id of a heading: an explicit `{#id}`, else its text lowercased, spaces as
/// `-`, only alphanumerics, `-` and `_` kept.
fn heading_ids(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter(|line| line.starts_with('#'))
        .map(|line| {
            let title = line.trim_start_matches('#').trim();
            if let Some(open) = title.rfind("{#") {
                return title[open + 2..].trim_end_matches('}').to_string();
            }
            title
                .chars()
                .filter_map(|c| {
                    if c.is_alphanumeric() || c == '_' || c == '-' {
                        Some(c.to_ascii_lowercase())
                    } else if c.is_whitespace() {
                        Some('-')
                    } else {
                        None
                    }
                })
                .collect()
        })
        .collect()
}

/// The targets of `[text](target)` links outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(close) = rest.find(')') {
                targets.push(rest[..close].to_string());
                rest = &rest[close..];
            }
        }
    }
    targets
}

/// Checks each local link of the Markdown file `file`; returns what does not resolve.
fn broken_links(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("read a Markdown file");
    let dir = file.parent().expect("a file has a folder");
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let linked = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        if !linked.exists() {
            broken.push(format!("{}: {target} (no such file)", file.display()));
            continue;
        }
        if let Some(anchor) = anchor {
            let linked_text = std::fs::read_to_string(&linked).unwrap_or_default();
            if !heading_ids(&linked_text).contains(anchor) {
                broken.push(format!("{}: {target} (no such heading)", file.display()));
            }
        }
    }
    broken
}

fn chapters() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs/src"))
        .expect("docs/src")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

#[test]
fn links_in_the_book_and_the_readme_resolve() {
    let mut files = chapters();
    files.push(root().join("README.md"));
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// "§3", "§3.4", "§5 rule 6" (the rule's number is a list item, not a heading).
fn section_references(text: &str) -> Vec<String> {
    text.split('§')
        .skip(1)
        .filter_map(|after| {
            let number: String = after
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let number = number.trim_end_matches('.').to_string();
            (!number.is_empty()).then_some(number)
        })
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') && name != "book" {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") || name.ends_with(".md") || name.ends_with(".sql") {
            out.push(path);
        }
    }
}

#[test]
fn every_section_reference_names_a_section_of_the_contract() {
    let contract = std::fs::read_to_string(root().join("docs/src/contract.md"))
        .expect("read docs/src/contract.md");
    let ids = heading_ids(&contract);
    let mut files = Vec::new();
    sources(&root(), &mut files);
    let mut unknown = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for number in section_references(&text) {
            let mut parts = number.split('.');
            let section = parts.next().unwrap_or_default();
            // §5.7 is rule 7 of §5 (a numbered list, not a heading).
            let id = match parts.next() {
                Some(sub) if section != "5" => format!("s{section}-{sub}"),
                _ => format!("s{section}"),
            };
            if !ids.contains(&id) {
                unknown.push(format!("{}: §{number}", file.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "references to no section of docs/src/contract.md:\n{}",
        unknown.join("\n")
    );
}
