//! The docs' links: every relative link in the README, the book, `bench/RESULTS.md` and
//! `tests/README.md` names a file that exists (and a heading of it, after `#`), and every page
//! of the book is in its `SUMMARY.md`. mdBook itself only checks the summary's own entries.

use std::path::{Path, PathBuf};

/// The Markdown files whose links are checked, from the workspace root.
pub fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![
        root.join("README.md"),
        root.join("bench/RESULTS.md"),
        root.join("tests/README.md"),
    ];
    files.extend(book_pages(&root.join("docs/src")));
    files
}

fn book_pages(dir: &Path) -> Vec<PathBuf> {
    let mut pages = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return pages;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            pages.extend(book_pages(&path));
        } else if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    pages
}

/// Each link target of `text` outside code: what `[label](target)` points at.
fn targets(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// The anchors of a page's headings, as mdBook and GitHub make them.
fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            !in_code && l.starts_with('#')
        })
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// Every broken link, one sentence each; empty when all resolve.
pub fn broken(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for doc in documents(root) {
        let Ok(text) = std::fs::read_to_string(&doc) else {
            problems.push(format!("{} is missing", doc.display()));
            continue;
        };
        let shown = doc.strip_prefix(root).unwrap_or(&doc).display().to_string();
        for target in targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap_or(root).join(file)
            };
            if !path.exists() {
                problems.push(format!("{shown}: `{target}` names no file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let page = std::fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&page).iter().any(|a| a == anchor) {
                    problems.push(format!("{shown}: `{target}` names no heading of that page"));
                }
            }
        }
    }
    let src = root.join("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap_or_default();
    let listed = targets(&summary);
    for page in book_pages(&src) {
        let relative = page.strip_prefix(&src).unwrap_or(&page).display().to_string();
        if relative != "SUMMARY.md" && !listed.contains(&relative) {
            problems.push(format!("docs/src/{relative} is not in docs/src/SUMMARY.md"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_in_the_docs_resolves() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let problems = broken(&root);
        assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
    }

    #[test]
    fn a_link_to_a_missing_file_or_heading_is_found() {
        let dir = std::env::temp_dir().join(format!("links-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("docs/src")).unwrap_or_default();
        let write = |p: &str, t: &str| std::fs::write(dir.join(p), t).unwrap_or_default();
        write(
            "README.md",
            "[a](docs/src/a.md#there) [b](nowhere.md) `[c](x.md)`\n```\n[d](y.md)\n```\n",
        );
        write("docs/src/a.md", "# A\n## Here it is\n");
        write("docs/src/SUMMARY.md", "- [A](a.md)\n");
        write("docs/src/orphan.md", "# O\n");
        let problems = broken(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let text = problems.join("\n");
        assert!(text.contains("`docs/src/a.md#there` names no heading"), "{text}");
        assert!(text.contains("`nowhere.md` names no file"), "{text}");
        assert!(text.contains("orphan.md is not in"), "{text}");
        assert!(
            !text.contains("y.md"),
            "a link inside a code block is not a link: {text}"
        );
    }
}
