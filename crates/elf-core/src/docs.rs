//! Man pages and shell completions, generated from a tool's flag table.
//!
//! The man page prose is a roff skeleton written by hand in each tool's folder; the OPTIONS and
//! EXIT STATUS sections and the version are filled in here.

use crate::cli::{Flag, Generate, Operands, Tool};

/// The document `kind` for `tool`.
pub fn generate(tool: &Tool, kind: Generate) -> String {
    match kind {
        Generate::Man => man(tool),
        Generate::Bash => bash(tool),
        Generate::Zsh => zsh(tool),
        Generate::Fish => fish(tool),
    }
}

/// Escapes plain text for roff: backslashes, and a leading `.` or `'`.
pub fn roff_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        if !out.is_empty() {
            out.push('\n');
        }
        let e = line.replace('\\', "\\e").replace('-', "\\-");
        if e.starts_with('.') || e.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&e);
    }
    out
}

/// The man page.
pub fn man(tool: &Tool) -> String {
    let mut options = String::new();
    for f in tool.all_flags() {
        options.push_str(".TP\n");
        let mut head = String::new();
        if let Some(c) = f.short {
            head.push_str(&format!("\\fB\\-{c}\\fR, "));
        }
        head.push_str(&format!("\\fB\\-\\-{}\\fR", roff_escape(f.long)));
        if let Some(v) = f.value {
            head.push_str(&format!(" \\fI{}\\fR", roff_escape(v)));
        }
        options.push_str(&head);
        options.push('\n');
        let doc = if f.doc.is_empty() { f.help } else { f.doc };
        for (i, para) in doc.split("\n\n").enumerate() {
            if i > 0 {
                options.push_str(".IP\n");
            }
            for line in crate::cli::wrap(para, 72) {
                options.push_str(&roff_escape(&line));
                options.push('\n');
            }
        }
    }
    let mut exit = String::new();
    for (code, what) in crate::exit::TABLE {
        exit.push_str(&format!(".TP\n.B {}\n", roff_escape(code)));
        for line in crate::cli::wrap(what, 72) {
            exit.push_str(&roff_escape(&line));
            exit.push('\n');
        }
    }
    let record = protocol_roff(crate::record::PROTOCOL);
    tool.man
        .replace("{{OPTIONS}}", options.trim_end())
        .replace("{{EXIT STATUS}}", exit.trim_end())
        .replace("{{RECORD FORMAT}}", record.trim_end())
        .replace("{{VERSION}}", tool.version)
}

/// The record protocol's rules (a Markdown list: `code` and **bold** spans, nothing else) as
/// roff paragraphs with a bullet each.
pub fn protocol_roff(markdown: &str) -> String {
    let mut out = String::new();
    for item in markdown.split("\n- ") {
        let item = item.trim_start_matches("- ");
        let text = crate::cli::wrap(item, 72).join("\n");
        out.push_str(".IP \\(bu 2\n");
        out.push_str(&inline_roff(&text));
        out.push('\n');
    }
    out
}

/// Markdown's `code` and **bold** spans as roff bold; everything escaped.
fn inline_roff(text: &str) -> String {
    let mut out = String::new();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("\\fB{}\\fR", roff_escape(span)));
            continue;
        }
        for (j, part) in span.split("**").enumerate() {
            if j % 2 == 1 {
                out.push_str(&format!("\\fB{}\\fR", roff_escape(part)));
            } else {
                out.push_str(&roff_escape(part));
            }
        }
    }
    out
}

fn fn_name(tool: &Tool) -> String {
    format!("_{}", tool.name.replace('-', "_"))
}

/// bash completions.
pub fn bash(tool: &Tool) -> String {
    let flags: Vec<&Flag> = tool.all_flags().collect();
    let mut words: Vec<String> = Vec::new();
    for f in &flags {
        if let Some(c) = f.short {
            words.push(format!("-{c}"));
        }
        words.push(format!("--{}", f.long));
    }
    let mut cases = String::new();
    for f in flags.iter().filter(|f| f.value.is_some()) {
        let mut pats = vec![format!("--{}", f.long)];
        if let Some(c) = f.short {
            pats.push(format!("-{c}"));
        }
        let action = if !f.choices.is_empty() {
            format!(
                "mapfile -t COMPREPLY < <(compgen -W '{}' -- \"$cur\")",
                f.choices.join(" ")
            )
        } else if f.path {
            "mapfile -t COMPREPLY < <(compgen -f -- \"$cur\")".to_string()
        } else {
            "COMPREPLY=()".to_string()
        };
        cases.push_str(&format!(
            "        {})\n            {action}\n            return\n            ;;\n",
            pats.join("|")
        ));
    }
    let operand = match tool.operand_kind {
        "command" => "mapfile -t COMPREPLY < <(compgen -c -- \"$cur\")",
        "file" => "mapfile -t COMPREPLY < <(compgen -f -- \"$cur\")",
        _ => "COMPREPLY=()",
    };
    let stop = if tool.operands == Operands::StopAtFirst {
        "    # Options end at the first operand; what follows belongs to the command.\n    local i\n    for ((i = 1; i < COMP_CWORD; i++)); do\n        if [[ ${COMP_WORDS[i]} == -- ]]; then\n            mapfile -t COMPREPLY < <(compgen -c -- \"$cur\")\n            return\n        fi\n    done\n"
    } else {
        ""
    };
    let name = fn_name(tool);
    format!(
        "# bash completion for {tool}, generated by `{tool} --generate complete-bash`\n\
{name}() {{\n    local cur prev\n    cur=${{COMP_WORDS[COMP_CWORD]}}\n    prev=${{COMP_WORDS[COMP_CWORD-1]}}\n    \
case $prev in\n{cases}    esac\n{stop}    if [[ $cur == -* ]]; then\n        mapfile -t COMPREPLY < <(compgen -W '{words}' -- \"$cur\")\n        return\n    fi\n    {operand}\n}}\n\
complete -F {name} {tool}\n",
        tool = tool.name,
        words = words.join(" "),
    )
}

fn zsh_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\'', "'\\''")
        .replace('[', "\\[")
        .replace(']', "\\]")
        .replace(':', "\\:")
}

/// zsh completions.
pub fn zsh(tool: &Tool) -> String {
    let mut specs = Vec::new();
    for f in tool.all_flags() {
        let help = zsh_escape(f.help);
        let repeat = if f.repeat { "*" } else { "" };
        let value = match f.value {
            None => String::new(),
            Some(v) => {
                let action = if !f.choices.is_empty() {
                    format!("({})", f.choices.join(" "))
                } else if f.path {
                    "_files".to_string()
                } else {
                    " ".to_string()
                };
                format!(":{}:{action}", zsh_escape(v))
            }
        };
        if let Some(c) = f.short {
            let sep = if f.value.is_some() { "+" } else { "" };
            specs.push(format!("'{repeat}-{c}{sep}[{help}]{value}'"));
        }
        let sep = if f.value.is_some() { "=" } else { "" };
        specs.push(format!("'{repeat}--{}{sep}[{help}]{value}'", f.long));
    }
    let operand = match (tool.operands, tool.operand_kind) {
        (_, "command") => "'*::command:_normal'",
        (_, "file") => "'*:file:_files'",
        _ => "'*:argument: '",
    };
    specs.push(operand.to_string());
    format!(
        "#compdef {tool}\n# zsh completion for {tool}, generated by `{tool} --generate complete-zsh`\n\n_arguments -s -S \\\n  {}\n",
        specs.join(" \\\n  "),
        tool = tool.name
    )
}

fn fish_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// fish completions.
pub fn fish(tool: &Tool) -> String {
    let mut out = format!(
        "# fish completion for {tool}, generated by `{tool} --generate complete-fish`\n",
        tool = tool.name
    );
    for f in tool.all_flags() {
        let mut line = format!("complete -c {}", tool.name);
        if let Some(c) = f.short {
            line.push_str(&format!(" -s {c}"));
        }
        line.push_str(&format!(" -l {}", f.long));
        if f.value.is_some() {
            line.push_str(" -r");
            if !f.choices.is_empty() {
                line.push_str(&format!(" -f -a '{}'", f.choices.join(" ")));
            } else if f.path {
                line.push_str(" -F");
            } else {
                line.push_str(" -f");
            }
        }
        line.push_str(&format!(" -d '{}'", fish_escape(f.help)));
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_renders_one_bullet_per_rule_with_code_in_bold() {
        let roff = protocol_roff("- one `a-b` rule\n- **two**\n  lines");
        assert_eq!(
            roff,
            ".IP \\(bu 2\none \\fBa\\-b\\fR rule\n.IP \\(bu 2\n\\fBtwo\\fR lines\n"
        );
    }

    #[test]
    fn roff_escapes_leading_dots_and_backslashes() {
        assert_eq!(
            roff_escape(".hidden\n'quote\na\\b-c"),
            "\\&.hidden\n\\&'quote\na\\eb\\-c"
        );
    }

    #[test]
    fn zsh_escapes_brackets_and_colons() {
        assert_eq!(zsh_escape("a [b]: c's"), "a \\[b\\]\\: c'\\''s");
    }
}
