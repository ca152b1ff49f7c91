//! Man pages and shell completions, generated from a tool's flag table.
//!
//! The man page prose is a roff skeleton written by hand in each tool's folder; the OPTIONS and
//! EXIT STATUS sections and the version are filled in here.

use crate::cli::{Flag, Generate, Kind, Operand, Operands, Tool};

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
    if !tool.commands.is_empty() {
        options.push_str("Flags that only some commands take:\n");
        for c in tool.commands.iter().filter(|c| !c.flags.is_empty()) {
            let flags: Vec<String> = c
                .flags
                .iter()
                .map(|f| format!("\\-\\-{}", roff_escape(f)))
                .collect();
            options.push_str(&format!(
                ".TP\n.B {}\n{}\n",
                roff_escape(c.name),
                flags.join(", ")
            ));
        }
        options.push_str(".PP\nEvery other flag applies to every command.\n");
    }
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
    for (code, what) in crate::cli::exits_of(tool) {
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

/// Single-quotes a word for sh (the tables hold no quote, but nothing relies on it).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `-n --attempts` for each flag, as completion words.
fn flag_words(flags: &[&Flag]) -> String {
    let mut words = Vec::new();
    for f in flags {
        if let Some(c) = f.short {
            words.push(format!("-{c}"));
        }
        words.push(format!("--{}", f.long));
    }
    words.join(" ")
}

/// The patterns (`--db|-d`) that name a flag.
fn flag_patterns(f: &Flag) -> String {
    let mut pats = vec![format!("--{}", f.long)];
    if let Some(c) = f.short {
        pats.push(format!("-{c}"));
    }
    pats.join("|")
}

/// The index of the operand that starts a command line, if a list has one.
fn command_slot(list: &[Operand]) -> Option<usize> {
    list.iter().position(|o| o.kind == Kind::Command)
}

const BASH_FILES: &str =
    "compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- \"$cur\")";
const BASH_COMMANDS: &str = "mapfile -t COMPREPLY < <(compgen -c -- \"$cur\" | LC_ALL=C sort -u)";

/// The bash lines completing the operand at `$n` of `list`.
fn bash_operand(list: &[Operand], indent: &str) -> String {
    let action = |o: &Operand| match o.kind {
        Kind::File => BASH_FILES,
        Kind::Command => BASH_COMMANDS,
        Kind::Text => "COMPREPLY=()",
    };
    let mut s = format!("{indent}case $n in\n");
    for (i, o) in list.iter().enumerate() {
        let last = i + 1 == list.len();
        let pat = if last && (o.many || o.kind == Kind::Command) {
            "*".to_string()
        } else {
            i.to_string()
        };
        s.push_str(&format!("{indent}    {pat}) {} ;;\n", action(o)));
    }
    s.push_str(&format!("{indent}esac\n"));
    s
}

/// bash completions: flags by the command they apply to, flag values, operands by position
/// (files, commands and then the command's own completion, nothing for text), subcommands.
pub fn bash(tool: &Tool) -> String {
    let name = fn_name(tool);
    let value_flags: Vec<String> = tool
        .all_flags()
        .filter(|f| f.value.is_some())
        .map(flag_patterns)
        .collect();
    let stop = tool.operands == Operands::StopAtFirst;
    let has_commands = !tool.commands.is_empty();
    let slot = command_slot(tool.args);
    let mut s = format!(
        "# bash completion for {t}, generated by `{t} --generate complete-bash`\n\
         {name}() {{\n    \
         local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}\n    \
         local i w value=0 flags=1{cmd} n=0 start=0\n    \
         COMPREPLY=()\n    \
         # What the words before the cursor are: flags, their values (`--flag=value` is three\n    \
         # words to bash), the command, operands.\n    \
         {prescan}for ((i = 1; start == 0 && i < COMP_CWORD; i++)); do\n        \
         w=${{COMP_WORDS[i]}}\n        \
         if ((value)); then\n            \
         [[ $w == = ]] || value=0\n            \
         continue\n        \
         fi\n",
        t = tool.name,
        cmd = if has_commands { " cmd=''" } else { "" },
        prescan = if slot.is_some_and(|k| k > 0) {
            "# The first -- ends the operands before the command, wherever it is.\n    \
             for ((i = 1; i < COMP_CWORD; i++)); do\n        \
             if [[ ${COMP_WORDS[i]} == -- ]]; then\n            \
             start=$((i + 1))\n            \
             break\n        \
             fi\n    \
             done\n    "
        } else {
            ""
        }
    );
    if slot.is_some() {
        s.push_str(
            "        if [[ $w == -- ]]; then\n            start=$((i + 1))\n            break\n        fi\n",
        );
    }
    s.push_str("        if ((flags)); then\n            case $w in\n");
    if slot.is_none() {
        s.push_str("                --) flags=0; continue ;;\n");
    }
    if !value_flags.is_empty() {
        s.push_str(&format!(
            "                {}) value=1; continue ;;\n",
            value_flags.join("|")
        ));
    }
    s.push_str("                -?*) continue ;;\n            esac\n        fi\n");
    if has_commands {
        s.push_str("        if [[ -z $cmd ]]; then\n            cmd=$w\n            continue\n        fi\n");
    }
    if stop {
        s.push_str("        flags=0\n");
    }
    if let Some(k) = slot {
        s.push_str(&format!(
            "        if ((n == {k})); then\n            start=$i\n            break\n        fi\n"
        ));
    }
    s.push_str("        n=$((n + 1))\n    done\n");
    if slot.is_some() {
        s.push_str(&format!(
            "    if ((start)); then\n        \
             # A command line: the command's name, then its own completion.\n        \
             if ((start == COMP_CWORD)); then\n            {BASH_COMMANDS}\n        \
             elif declare -F _command_offset >/dev/null; then\n            \
             _command_offset \"$start\"\n        \
             else\n            {BASH_FILES}\n        \
             fi\n        \
             return\n    \
             fi\n"
        ));
    }
    // A flag's value.
    s.push_str("    if ((value)); then\n        [[ $prev != = ]] || prev=${COMP_WORDS[COMP_CWORD-2]}\n        case $prev in\n");
    for f in tool.all_flags().filter(|f| f.value.is_some()) {
        let action = if !f.choices.is_empty() {
            format!(
                "mapfile -t COMPREPLY < <(compgen -W {} -- \"$cur\")",
                sh_quote(&f.choices.join(" "))
            )
        } else if f.path {
            BASH_FILES.to_string()
        } else {
            continue;
        };
        s.push_str(&format!("            {}) {action} ;;\n", flag_patterns(f)));
    }
    s.push_str("        esac\n        return\n    fi\n");
    // Flags.
    s.push_str("    if ((flags)) && [[ $cur == -* ]]; then\n");
    if has_commands {
        s.push_str("        local words\n        case $cmd in\n");
        for c in tool.commands {
            s.push_str(&format!(
                "            {}) words={} ;;\n",
                c.name,
                sh_quote(&flag_words(&tool.flags_of(Some(c))))
            ));
        }
        s.push_str(&format!(
            "            *) words={} ;;\n        esac\n",
            sh_quote(&flag_words(&tool.flags_of(None)))
        ));
        s.push_str("        mapfile -t COMPREPLY < <(compgen -W \"$words\" -- \"$cur\")\n");
    } else {
        s.push_str(&format!(
            "        mapfile -t COMPREPLY < <(compgen -W {} -- \"$cur\")\n",
            sh_quote(&flag_words(&tool.flags_of(None)))
        ));
    }
    s.push_str("        return\n    fi\n");
    // Operands.
    if has_commands {
        let names: Vec<&str> = tool.commands.iter().map(|c| c.name).collect();
        s.push_str(&format!(
            "    case $cmd in\n        '') mapfile -t COMPREPLY < <(compgen -W {} -- \"$cur\") ;;\n",
            sh_quote(&names.join(" "))
        ));
        for c in tool.commands {
            if c.operands.iter().all(|o| o.kind == Kind::Text) {
                continue;
            }
            s.push_str(&format!("        {})\n", c.name));
            s.push_str(&bash_operand(c.operands, "            "));
            s.push_str("            ;;\n");
        }
        s.push_str("    esac\n");
    } else {
        s.push_str(&bash_operand(tool.args, "    "));
    }
    s.push_str(&format!("}}\ncomplete -F {name} {}\n", tool.name));
    s
}

fn zsh_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\'', "'\\''")
        .replace('[', "\\[")
        .replace(']', "\\]")
        .replace(':', "\\:")
}

/// The `_arguments` specs of some flags.
fn zsh_flag_specs(flags: &[&Flag]) -> Vec<String> {
    let mut specs = Vec::new();
    for f in flags {
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
    specs
}

/// The `_arguments` specs of operands.
fn zsh_operand_specs(list: &[Operand]) -> Vec<String> {
    let mut specs = Vec::new();
    for (i, o) in list.iter().enumerate() {
        let name = zsh_escape(&o.name.to_lowercase());
        let action = match o.kind {
            Kind::File => "_files",
            Kind::Text => " ",
            Kind::Command => "_normal",
        };
        specs.push(match (o.kind, o.many) {
            (Kind::Command, _) => format!("'*:::{name}:{action}'"),
            (_, true) => format!("'*:{name}:{action}'"),
            (_, false) => format!("'{}:{name}:{action}'", i + 1),
        });
    }
    if list
        .last()
        .is_none_or(|o| !o.many && o.kind != Kind::Command)
    {
        // Nothing more is an operand: say so rather than offer files.
        specs.push("'*: :_nothing'".to_string());
    }
    specs
}

/// zsh completions.
pub fn zsh(tool: &Tool) -> String {
    let name = tool.name;
    let stop = if tool.operands == Operands::StopAtFirst {
        " -A '-*'"
    } else {
        ""
    };
    let mut s = format!(
        "#compdef {name}\n# zsh completion for {name}, generated by `{name} --generate complete-zsh`\n\n_{name}() {{\n"
    );
    if command_slot(tool.args).is_some_and(|k| k > 0) {
        s.push_str(
            "  # After the first --, the rest is a command line.\n  local i\n  for (( i = 2; i < CURRENT; i++ )); do\n    if [[ $words[i] == -- ]]; then\n      shift $i words\n      (( CURRENT -= i ))\n      _normal\n      return\n    fi\n  done\n",
        );
    }
    let join = |specs: Vec<String>| specs.join(" \\\n    ");
    if tool.commands.is_empty() {
        let mut specs = zsh_flag_specs(&tool.flags_of(None));
        specs.extend(zsh_operand_specs(tool.args));
        s.push_str(&format!(
            "  _arguments -s -S{stop} \\\n    {}\n",
            join(specs)
        ));
    } else {
        let mut specs = zsh_flag_specs(&tool.flags_of(None));
        specs.push("'1:command:->command'".to_string());
        specs.push("'*:: :->argument'".to_string());
        s.push_str(&format!(
            "  local curcontext=$curcontext state state_descr line ret=1\n  typeset -A opt_args\n  _arguments -C -s -S \\\n    {} && ret=0\n",
            join(specs)
        ));
        s.push_str("  case $state in\n    command)\n      local -a commands=(\n");
        for c in tool.commands {
            s.push_str(&format!("        '{}:{}'\n", c.name, zsh_escape(c.help)));
        }
        s.push_str("      )\n      _describe -t commands command commands && ret=0\n      ;;\n    argument)\n      case $words[1] in\n");
        for c in tool.commands {
            let mut specs = zsh_flag_specs(&tool.flags_of(Some(c)));
            specs.extend(zsh_operand_specs(c.operands));
            s.push_str(&format!(
                "        {})\n          _arguments -s -S \\\n            {} && ret=0\n          ;;\n",
                c.name,
                specs.join(" \\\n            ")
            ));
        }
        s.push_str("      esac\n      ;;\n  esac\n  return ret\n");
    }
    s.push_str(&format!("}}\n\n_{name} \"$@\"\n"));
    s
}

fn fish_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// fish completions. A helper function reads the words before the cursor as the tool does
/// and prints the command (or nothing) and what the word under the cursor is: `command`
/// (a subcommand's name), `file`, `text`, `run START` (a command line from word START) or
/// `flags` as a third line when flags may still be given.
pub fn fish(tool: &Tool) -> String {
    let t = tool.name;
    let f = format!("__{}_at", t.replace('-', "_"));
    let mut s =
        format!("# fish completion for {t}, generated by `{t} --generate complete-fish`\n\n");
    let value_flags: Vec<String> = tool
        .all_flags()
        .filter(|f| f.value.is_some())
        .map(|f| flag_patterns(f).replace('|', " "))
        .collect();
    let stop = tool.operands == Operands::StopAtFirst;
    let has_commands = !tool.commands.is_empty();
    let slot = command_slot(tool.args);
    s.push_str(&format!(
        "# Prints the command (or an empty line), what the word under the cursor is (command,\n\
         # file, text, run START or none) and whether flags may still be given (flags or no).\n\
         function {f}\n    set -l words (commandline -opc)\n    set -l value 0\n    set -l flags 1\n    set -l cmd ''\n    set -l n 0\n    set -l i 1\n    \
         {prescan}while test $i -lt (count $words)\n        set i (math $i + 1)\n        set -l w $words[$i]\n        \
         if test $value = 1\n            set value 0\n            continue\n        end\n",
        prescan = if slot.is_some_and(|k| k > 0) {
            "# The first -- ends the operands before the command, wherever it is.\n    \
             if set -l j (contains -i -- -- $words)\n        \
             printf '%s\\n' '' \"run $(math $j + 1)\" no\n        \
             return\n    \
             end\n    "
        } else {
            ""
        }
    ));
    if slot.is_some() {
        s.push_str("        if test \"$w\" = --\n            printf '%s\\n' '' \"run $(math $i + 1)\" no\n            return\n        end\n");
    }
    s.push_str("        if test $flags = 1\n            switch $w\n");
    if slot.is_none() {
        s.push_str("                case --\n                    set flags 0\n                    continue\n");
    }
    if !value_flags.is_empty() {
        s.push_str(&format!(
            "                case {}\n                    set value 1\n                    continue\n",
            value_flags.join(" ")
        ));
    }
    s.push_str(
        "                case '-?*'\n                    continue\n            end\n        end\n",
    );
    if has_commands {
        s.push_str("        if test -z \"$cmd\"\n            set cmd $w\n            continue\n        end\n");
    }
    if stop {
        s.push_str("        set flags 0\n");
    }
    if let Some(k) = slot {
        s.push_str(&format!(
            "        if test $n = {k}\n            printf '%s\\n' '' \"run $i\" no\n            return\n        end\n"
        ));
    }
    s.push_str("        set n (math $n + 1)\n    end\n    set -l kind none\n    if test $value = 1\n        printf '%s\\n' \"$cmd\" none flags\n        return\n    end\n");
    let fish_operand = |list: &[Operand], indent: &str| {
        let mut out = format!("{indent}switch $n\n");
        for (i, o) in list.iter().enumerate() {
            let last = i + 1 == list.len();
            let pat = if last && (o.many || o.kind == Kind::Command) {
                "'*'".to_string()
            } else {
                i.to_string()
            };
            let kind = match o.kind {
                Kind::File => "file".to_string(),
                Kind::Text => "text".to_string(),
                Kind::Command => "run $(math (count $words) + 1)".to_string(),
            };
            out.push_str(&format!(
                "{indent}    case {pat}\n{indent}        set kind \"{kind}\"\n"
            ));
        }
        out.push_str(&format!("{indent}end\n"));
        out
    };
    if has_commands {
        s.push_str("    switch $cmd\n        case ''\n            set kind command\n");
        for c in tool.commands {
            if c.operands.is_empty() {
                continue;
            }
            s.push_str(&format!("        case {}\n", c.name));
            s.push_str(&fish_operand(c.operands, "            "));
        }
        s.push_str("    end\n");
    } else {
        s.push_str(&fish_operand(tool.args, "    "));
    }
    s.push_str("    set -l more no\n    test $flags = 1; and set more flags\n    printf '%s\\n' \"$cmd\" \"$kind\" $more\nend\n\n");
    // Conditions.
    s.push_str(&format!(
        "function {f}_is\n    string match -q -- $argv[1] ({f})[2]\nend\n\n\
         function {f}_flag\n    set -l at ({f})\n    test \"$at[3]\" = flags; or return 1\n    \
         test (count $argv) = 0; or contains -- \"$at[1]\" $argv\nend\n\n\
         function {f}_run\n    set -l at ({f})\n    set -l start (string replace 'run ' '' -- $at[2])\n    \
         set -l words (commandline -opc)\n    set -l line\n    \
         test $start -gt (count $words); or set line $words[$start..-1]\n    \
         __fish_complete_subcommand --commandline $line (commandline -ct)\nend\n\n"
    ));
    s.push_str(&format!("complete -c {t} -f\n"));
    for fl in tool.all_flags() {
        let users: Vec<&str> = tool
            .commands
            .iter()
            .filter(|c| c.flags.contains(&fl.long))
            .map(|c| c.name)
            .collect();
        let mut line = format!("complete -c {t} -n '{f}_flag {}'", users.join(" "));
        if users.is_empty() {
            line = format!("complete -c {t} -n {f}_flag");
        }
        if let Some(c) = fl.short {
            line.push_str(&format!(" -s {c}"));
        }
        line.push_str(&format!(" -l {}", fl.long));
        if fl.value.is_some() {
            if !fl.choices.is_empty() {
                line.push_str(&format!(" -x -a '{}'", fl.choices.join(" ")));
            } else if fl.path {
                line.push_str(" -r -F");
            } else {
                line.push_str(" -x");
            }
        }
        line.push_str(&format!(" -d '{}'", fish_escape(fl.help)));
        s.push_str(&line);
        s.push('\n');
    }
    for c in tool.commands {
        s.push_str(&format!(
            "complete -c {t} -n '{f}_is command' -a {} -d '{}'\n",
            c.name,
            fish_escape(c.help)
        ));
    }
    s.push_str(&format!("complete -c {t} -n '{f}_is file' -F\n"));
    if slot.is_some() {
        s.push_str(&format!(
            "complete -c {t} -n \"{f}_is 'run *'\" -a '({f}_run)'\n"
        ));
    }
    s
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
