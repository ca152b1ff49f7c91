//! One flag table per tool drives parsing, `--help`, the man page and the completions.
//!
//! Parsing is pure: [`parse`] takes the arguments and returns what to do, never prints and never
//! exits. `-h`, `--help`, `-V`, `--version` and `--generate KIND` are added to every tool.

use std::ffi::{OsStr, OsString};
use std::str::FromStr;

use crate::exit::{Error, Result};

/// One flag of a tool.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// The short form, `-n`.
    pub short: Option<char>,
    /// The long form without dashes, `attempts`; also the flag's identity in [`Matches`].
    pub long: &'static str,
    /// The value's name (`N`, `DURATION`) for a flag that takes one.
    pub value: Option<&'static str>,
    /// The values it accepts, when they are a fixed list (used by completions).
    pub choices: &'static [&'static str],
    /// Whether the value is a path (completions offer files).
    pub path: bool,
    /// One line for `-h`.
    pub help: &'static str,
    /// The full description for `--help` and the man page (plain text, paragraphs split by
    /// blank lines).
    pub doc: &'static str,
    /// May be given more than once.
    pub repeat: bool,
}

impl Flag {
    /// A flag with only a long form and no value; refine with the builder methods.
    pub const fn new(long: &'static str, help: &'static str) -> Flag {
        Flag {
            short: None,
            long,
            value: None,
            choices: &[],
            path: false,
            help,
            doc: "",
            repeat: false,
        }
    }
    /// Adds the short form.
    pub const fn short(mut self, c: char) -> Flag {
        self.short = Some(c);
        self
    }
    /// Makes it take a value named `name`.
    pub const fn value(mut self, name: &'static str) -> Flag {
        self.value = Some(name);
        self
    }
    /// The value is one of `choices`.
    pub const fn choices(mut self, choices: &'static [&'static str]) -> Flag {
        self.choices = choices;
        self
    }
    /// The value is a path.
    pub const fn path(mut self) -> Flag {
        self.path = true;
        self
    }
    /// The long description.
    pub const fn doc(mut self, doc: &'static str) -> Flag {
        self.doc = doc;
        self
    }
    /// May be repeated.
    pub const fn repeat(mut self) -> Flag {
        self.repeat = true;
        self
    }

    /// `-n, --attempts N` as shown in help.
    pub fn synopsis(&self) -> String {
        let mut s = String::new();
        if let Some(c) = self.short {
            s.push('-');
            s.push(c);
            s.push_str(", ");
        }
        s.push_str("--");
        s.push_str(self.long);
        if let Some(v) = self.value {
            s.push(' ');
            s.push_str(v);
        }
        s
    }
}

/// `--keep-going`, one flag with one meaning in every tool that has it.
pub const KEEP_GOING: Flag = Flag::new("keep-going", "Turn a failed record into an error record")
    .short('k')
    .doc(crate::keep_going_doc!());

/// The flags every tool has.
pub const COMMON: &[Flag] = &[
    Flag::new("help", "Print help (-h for a summary)")
        .short('h')
        .doc("Print help. -h prints a summary, --help the full text."),
    Flag::new("version", "Print the version")
        .short('V')
        .doc("Print the version and exit."),
    Flag::new("generate", "Print the man page or a completion script")
        .value("KIND")
        .choices(&["man", "complete-bash", "complete-zsh", "complete-fish"])
        .doc(
            "Print the man page (man) or the completion script for bash, zsh or fish \
             (complete-bash, complete-zsh, complete-fish) and exit. The files in the \
             source tree's man/ and completions/ folders are made with it.",
        ),
];

/// How operands are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operands {
    /// Flags and operands in any order; after `--`, everything is an operand.
    Free,
    /// Flag parsing stops at the first operand (POSIX `+`): the first operand and everything
    /// after it are operands, unparsed. For tools that run a command.
    StopAtFirst,
}

/// What an operand is, for completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file name.
    File,
    /// Text completions cannot guess (SQL, a key).
    Text,
    /// A command to run: this operand and every word after it are the command's line.
    Command,
}

/// One operand of a tool or of a subcommand.
#[derive(Debug, Clone, Copy)]
pub struct Operand {
    /// Its name in the synopsis, `LOCKFILE`.
    pub name: &'static str,
    /// What it is.
    pub kind: Kind,
    /// The last operand may be repeated (`PATH...`).
    pub many: bool,
    /// One line for `--help` and the man page.
    pub help: &'static str,
}

impl Operand {
    /// An operand given once.
    pub const fn one(name: &'static str, kind: Kind, help: &'static str) -> Operand {
        Operand {
            name,
            kind,
            many: false,
            help,
        }
    }
    /// An operand that may be repeated (only the last one of a list).
    pub const fn many(name: &'static str, kind: Kind, help: &'static str) -> Operand {
        Operand {
            name,
            kind,
            many: true,
            help,
        }
    }
}

/// A subcommand (`elf-db query`): its name, the tool's flags it accepts and its operands.
///
/// A flag of the tool's table that no command names applies to every command (`elf-db
/// --db`); a flag that some commands name applies only to those.
#[derive(Debug)]
pub struct Command {
    /// Its name, the tool's first operand.
    pub name: &'static str,
    /// One line saying what it does.
    pub help: &'static str,
    /// The long names of the tool's flags that only some commands accept and this one does.
    pub flags: &'static [&'static str],
    /// Its operands, after its name.
    pub operands: &'static [Operand],
}

/// The operand at position `n` (0-based) of `list`: the last one again when it is `many`, or
/// the command operand's for every word after it.
pub fn operand_at(list: &[Operand], n: usize) -> Option<&Operand> {
    if let Some(i) = list.iter().position(|o| o.kind == Kind::Command) {
        if n >= i {
            return list.get(i);
        }
    }
    match list.get(n) {
        Some(o) => Some(o),
        None => list.last().filter(|o| o.many),
    }
}

/// A tool: its name, its help text, its flags, its man page skeleton.
#[derive(Debug)]
pub struct Tool {
    /// The binary's name.
    pub name: &'static str,
    /// One line saying what it does.
    pub about: &'static str,
    /// Synopsis lines, without the tool's name.
    pub usage: &'static [&'static str],
    /// The tool's own flags (the [`COMMON`] ones are added).
    pub flags: &'static [Flag],
    /// How operands are read.
    pub operands: Operands,
    /// The operands, in order (for a tool with [`Tool::commands`], each command has its own).
    pub args: &'static [Operand],
    /// The subcommands, when the first operand names one (`elf-db insert`); empty otherwise.
    pub commands: &'static [Command],
    /// The exit statuses it can give, each a code of [`crate::exit::TABLE`] (`--help` and the
    /// man page's EXIT STATUS list them; a test checks the tool's code against them).
    pub exits: &'static [&'static str],
    /// The man page skeleton (roff) with `{{OPTIONS}}`, `{{EXIT STATUS}}`, `{{VERSION}}`,
    /// `{{RECORD FORMAT}}`.
    pub man: &'static str,
    /// Its version.
    pub version: &'static str,
}

impl Tool {
    /// Every flag, the tool's first, then the common ones.
    pub fn all_flags(&self) -> impl Iterator<Item = &'static Flag> + use<> {
        let own: &'static [Flag] = self.flags;
        own.iter().chain(COMMON.iter())
    }

    /// Whether `flag` (a long name of the table) is one that only some commands accept.
    fn command_specific(&self, flag: &str) -> bool {
        self.commands.iter().any(|c| c.flags.contains(&flag))
    }

    /// The flags `command` accepts (with no command: those every command accepts), in table
    /// order, the common ones last.
    pub fn flags_of(&self, command: Option<&Command>) -> Vec<&'static Flag> {
        self.all_flags()
            .filter(|f| {
                !self.command_specific(f.long) || command.is_some_and(|c| c.flags.contains(&f.long))
            })
            .collect()
    }

    /// The operands of `command`, or the tool's own without one.
    pub fn operands_of<'a>(&'a self, command: Option<&'a Command>) -> &'a [Operand] {
        match command {
            Some(c) => c.operands,
            None => self.args,
        }
    }

    /// For a tool with commands: the command named by the first operand, checked with the
    /// flags given (a flag that does not apply to it is a usage error).
    pub fn command(&self, m: &Matches) -> Result<&'static Command> {
        let names = || {
            let n: Vec<&str> = self.commands.iter().map(|c| c.name).collect();
            match n.split_last() {
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            }
        };
        let commands: &'static [Command] = self.commands;
        let Some(first) = m.operands.first() else {
            return Err(Error::usage(format!(
                "a command is required: {} (see --help)",
                names()
            )));
        };
        let name = first.to_str().unwrap_or("");
        let Some(command) = commands.iter().find(|c| c.name == name) else {
            return Err(Error::usage(format!(
                "unknown command '{}': expected {}",
                crate::text::escape(&first.to_string_lossy()),
                names()
            )));
        };
        for g in &m.flags {
            let f = g.name();
            if self.command_specific(f) && !command.flags.contains(&f) {
                return Err(Error::usage(format!(
                    "flag --{f} does not apply to {}",
                    command.name
                )));
            }
        }
        Ok(command)
    }

    fn find_long(&self, name: &str) -> Option<&'static Flag> {
        self.all_flags().find(|f| f.long == name)
    }

    fn find_short(&self, c: char) -> Option<&'static Flag> {
        self.all_flags().find(|f| f.short == Some(c))
    }
}

/// What the arguments ask for.
#[derive(Debug)]
pub enum Parsed {
    /// Print help; `true` for `--help`.
    Help(bool),
    /// Print the version.
    Version,
    /// Print generated documentation.
    Generate(Generate),
    /// Run with these flags and operands.
    Run(Matches),
}

/// A generated document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generate {
    /// The man page.
    Man,
    /// bash completions.
    Bash,
    /// zsh completions.
    Zsh,
    /// fish completions.
    Fish,
}

/// One flag as given.
#[derive(Debug, Clone)]
pub struct Given {
    /// The flag's table entry.
    pub flag: &'static Flag,
    /// Its value, for a flag that takes one.
    pub value: Option<OsString>,
}

impl Given {
    /// The flag's long name.
    pub fn name(&self) -> &'static str {
        self.flag.long
    }

    /// The value as UTF-8 text.
    pub fn str(&self) -> Result<&str> {
        let v = self
            .value
            .as_deref()
            .ok_or_else(|| Error::usage(format!("flag --{} needs a value", self.flag.long)))?;
        v.to_str().ok_or_else(|| {
            Error::usage(format!(
                "error parsing flag --{}: value is not UTF-8",
                self.flag.long
            ))
        })
    }

    /// The raw value.
    pub fn os(&self) -> Result<&OsStr> {
        self.value
            .as_deref()
            .ok_or_else(|| Error::usage(format!("flag --{} needs a value", self.flag.long)))
    }

    /// The value parsed with `FromStr`.
    pub fn parse<T: FromStr>(&self) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let s = self.str()?;
        s.parse::<T>().map_err(|e| self.bad(s, e))
    }

    /// The value converted by `f`, whose error message is wrapped as a usage error.
    pub fn with<T, E: std::fmt::Display>(&self, f: impl FnOnce(&str) -> Result<T, E>) -> Result<T> {
        let s = self.str()?;
        f(s).map_err(|e| self.bad(s, e))
    }

    /// A usage error about this flag's value.
    pub fn bad(&self, value: &str, why: impl std::fmt::Display) -> Error {
        Error::usage(format!(
            "error parsing flag --{}: invalid value '{}': {why}",
            self.flag.long,
            crate::text::escape(value)
        ))
    }
}

/// The flags and operands of a run.
#[derive(Debug, Clone, Default)]
pub struct Matches {
    /// Flags in the order given.
    pub flags: Vec<Given>,
    /// Operands in the order given.
    pub operands: Vec<OsString>,
}

/// Parses arguments (without the program name) against a tool's table.
pub fn parse<I>(tool: &Tool, args: I) -> Result<Parsed>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut p = lexopt::Parser::from_args(args);
    let mut m = Matches::default();
    loop {
        let arg = match p.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return Err(Error::usage(e.to_string())),
        };
        let was_long = matches!(arg, lexopt::Arg::Long(_));
        let flag = match arg {
            lexopt::Arg::Short(c) => tool
                .find_short(c)
                .ok_or_else(|| Error::usage(format!("unknown flag -{c} (see --help)")))?,
            lexopt::Arg::Long(name) => tool.find_long(name).ok_or_else(|| {
                Error::usage(format!(
                    "unknown flag --{} (see --help)",
                    crate::text::escape(name)
                ))
            })?,
            lexopt::Arg::Value(v) => {
                m.operands.push(v);
                if tool.operands == Operands::StopAtFirst {
                    match p.raw_args() {
                        Ok(rest) => m.operands.extend(rest),
                        Err(e) => return Err(Error::usage(e.to_string())),
                    }
                    break;
                }
                continue;
            }
        };
        let value = if flag.value.is_some() {
            let v = p.value().map_err(|_| {
                Error::usage(format!(
                    "flag --{} needs a value ({})",
                    flag.long,
                    flag.value.unwrap_or("")
                ))
            })?;
            if !flag.choices.is_empty() {
                let ok = v.to_str().is_some_and(|s| flag.choices.contains(&s));
                if !ok {
                    return Err(Error::usage(format!(
                        "error parsing flag --{}: invalid value '{}': expected one of {}",
                        flag.long,
                        crate::text::escape(&v.to_string_lossy()),
                        flag.choices.join(", ")
                    )));
                }
            }
            Some(v)
        } else {
            None
        };
        match flag.long {
            "help" => return Ok(Parsed::Help(was_long)),
            "version" => return Ok(Parsed::Version),
            "generate" => {
                let kind = match value.as_deref().and_then(OsStr::to_str) {
                    Some("man") => Generate::Man,
                    Some("complete-bash") => Generate::Bash,
                    Some("complete-zsh") => Generate::Zsh,
                    _ => Generate::Fish,
                };
                return Ok(Parsed::Generate(kind));
            }
            _ => {}
        }
        if !flag.repeat && m.flags.iter().any(|g| std::ptr::eq(g.flag, flag)) {
            // The last one wins, as with most tools; drop the earlier one.
            m.flags.retain(|g| !std::ptr::eq(g.flag, flag));
        }
        m.flags.push(Given { flag, value });
    }
    Ok(Parsed::Run(m))
}

/// [`check_handlers`] for a tool's unit test: panics naming the flag without a handler.
pub fn assert_every_flag_handled<T>(tool: &Tool, read: impl Fn(Matches) -> Result<T>) {
    match check_handlers(tool, read) {
        Ok(n) => assert_eq!(n, tool.flags.len(), "{}: a flag was not checked", tool.name),
        Err(e) => panic!("{}: {e}", tool.name),
    }
}

/// The message of [`Given::unhandled`], which [`check_handlers`] looks for.
const UNHANDLED: &str = "has no handler";

impl Given {
    /// The error for a flag of the table that a tool's options reader does not handle (an
    /// internal error: every tool reads its flags with one exhaustive `match` on the name,
    /// and this is its last arm).
    pub fn unhandled(&self) -> Error {
        Error::internal(format!("flag --{} {UNHANDLED}", self.flag.long))
    }
}

/// Checks that a tool's options reader handles every flag of its table: each flag is parsed
/// alone (with its first choice, or `1`, as its value) and given to `read`, which may accept
/// it or refuse it, but must not answer [`Given::unhandled`]. For each tool's unit tests.
pub fn check_handlers<T>(
    tool: &Tool,
    read: impl Fn(Matches) -> Result<T>,
) -> std::result::Result<usize, String> {
    let mut checked = 0;
    for flag in tool.flags {
        let mut args = vec![OsString::from(format!("--{}", flag.long))];
        if flag.value.is_some() {
            args.push(OsString::from(flag.choices.first().copied().unwrap_or("1")));
        }
        let m = match parse(tool, args) {
            Ok(Parsed::Run(m)) => m,
            Ok(_) => continue,
            Err(e) => return Err(format!("--{}: {e}", flag.long)),
        };
        if let Err(e) = read(m) {
            if e.message().contains(UNHANDLED) {
                return Err(e.message().to_string());
            }
        }
        checked += 1;
    }
    Ok(checked)
}

/// Help text: `-h` prints one line per flag, `--help` adds each flag's description.
pub fn help(tool: &Tool, long: bool) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{} {}\n{}\n\nUsage:\n",
        tool.name, tool.version, tool.about
    ));
    for u in tool.usage {
        s.push_str(&format!("  {} {u}\n", tool.name));
    }
    if !tool.commands.is_empty() {
        s.push_str("\nCommands:\n");
        let heads: Vec<String> = tool
            .commands
            .iter()
            .map(|c| {
                let mut h = c.name.to_string();
                for o in c.operands {
                    h.push(' ');
                    h.push_str(&operand_synopsis(o));
                }
                h
            })
            .collect();
        let col = heads.iter().map(String::len).max().unwrap_or(0);
        for (c, head) in tool.commands.iter().zip(&heads) {
            s.push_str(&format!("  {head:col$}  {}\n", c.help));
            if long && !c.flags.is_empty() {
                let flags: Vec<String> = c.flags.iter().map(|f| format!("--{f}")).collect();
                for line in wrap(&format!("also takes {}", flags.join(", ")), 68) {
                    s.push_str(&format!("  {:col$}    {line}\n", ""));
                }
            }
        }
    }
    if !tool.args.is_empty() {
        s.push_str("\nOperands:\n");
        let col = tool
            .args
            .iter()
            .map(|o| operand_synopsis(o).len())
            .max()
            .unwrap_or(0);
        for o in tool.args {
            s.push_str(&format!("  {:col$}  {}\n", operand_synopsis(o), o.help));
        }
    }
    s.push_str("\nOptions:\n");
    let pad_of = |f: &Flag| if f.short.is_some() { "" } else { "    " };
    let col = tool
        .all_flags()
        .map(|f| pad_of(f).len() + f.synopsis().len())
        .max()
        .unwrap_or(0);
    for f in tool.all_flags() {
        let syn = f.synopsis();
        let pad = pad_of(f);
        if long && !f.doc.is_empty() {
            s.push_str(&format!("  {pad}{syn}\n"));
            for line in wrap(f.doc, 72) {
                s.push_str(&format!("          {line}\n"));
            }
            s.push('\n');
        } else {
            s.push_str(&format!(
                "  {pad}{syn:width$}  {}\n",
                f.help,
                width = col - pad.len()
            ));
        }
    }
    if long {
        s.push_str("\nExit status:\n");
        for (code, what) in exits_of(tool) {
            s.push_str(&format!("  {code:>5}  {what}\n"));
        }
    } else {
        s.push_str(&format!(
            "\nUse --help for details, or: man {}\n",
            tool.name
        ));
    }
    s
}

/// The rows of [`crate::exit::TABLE`] a tool can exit with.
pub fn exits_of(tool: &Tool) -> impl Iterator<Item = &'static (&'static str, &'static str)> + '_ {
    crate::exit::TABLE
        .iter()
        .filter(|(code, _)| tool.exits.contains(code))
}

/// `NAME` or `NAME...`.
pub fn operand_synopsis(o: &Operand) -> String {
    match (o.kind, o.many) {
        (Kind::Command, _) => format!("{} [ARGS...]", o.name),
        (_, true) => format!("{}...", o.name),
        (_, false) => o.name.to_string(),
    }
}

/// Wraps paragraphs (split by blank lines) to `width` columns.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (i, para) in text.split("\n\n").enumerate() {
        if i > 0 {
            out.push(String::new());
        }
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            out.push(line);
        }
    }
    out
}

/// Checks a flag table: unique names, value flags name their value, choices only on value
/// flags. Each tool has a unit test calling it.
pub fn check_table(tool: &Tool) -> std::result::Result<(), String> {
    let flags: Vec<&Flag> = tool.all_flags().collect();
    for code in tool.exits {
        if !crate::exit::TABLE.iter().any(|(c, _)| c == code) {
            return Err(format!("exit status {code} is not in the exit table"));
        }
    }
    for code in crate::exit::SHARED {
        if !tool.exits.contains(code) {
            return Err(format!("exit status {code} (every tool's) is missing"));
        }
    }
    for c in tool.commands {
        for f in c.flags {
            if !tool.flags.iter().any(|x| x.long == *f) {
                return Err(format!("command {}: --{f} is not in the table", c.name));
            }
        }
    }
    let lists = std::iter::once(tool.args).chain(tool.commands.iter().map(|c| c.operands));
    for list in lists {
        for (i, o) in list.iter().enumerate() {
            let last = i + 1 == list.len();
            if (o.many || o.kind == Kind::Command) && !last {
                return Err(format!(
                    "operand {}: only the last may repeat or be a command",
                    o.name
                ));
            }
        }
    }
    if !tool.commands.is_empty() && !tool.args.is_empty() {
        return Err("a tool with commands has its operands on its commands".into());
    }
    for (i, a) in flags.iter().enumerate() {
        if a.long.is_empty() || a.long.starts_with('-') {
            return Err(format!("bad long name {:?}", a.long));
        }
        if a.help.is_empty() || a.help.len() > 60 {
            return Err(format!("--{}: help must be one short line", a.long));
        }
        if !a.choices.is_empty() && a.value.is_none() {
            return Err(format!("--{} has choices but takes no value", a.long));
        }
        for b in &flags[i + 1..] {
            if a.long == b.long {
                return Err(format!("--{} twice", a.long));
            }
            if a.short.is_some() && a.short == b.short {
                return Err(format!("-{} twice", a.short.unwrap_or(' ')));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(m: &'a Matches, long: &str) -> Option<&'a Given> {
        m.flags.iter().rev().find(|g| g.flag.long == long)
    }

    fn has(m: &Matches, long: &str) -> bool {
        get(m, long).is_some()
    }

    fn all<'a>(m: &'a Matches, long: &'a str) -> impl Iterator<Item = &'a Given> + 'a {
        m.flags.iter().filter(move |g| g.flag.long == long)
    }

    #[test]
    fn check_handlers_finds_a_flag_without_a_handler() {
        static FLAGS: &[Flag] = &[Flag::new("one", "x"), Flag::new("two", "y").value("N")];
        static T: Tool = Tool {
            name: "t",
            about: "t",
            usage: &[],
            flags: FLAGS,
            operands: Operands::Free,
            args: &[],
            commands: &[],
            exits: &[],
            man: "",
            version: "0",
        };
        let only_one = |m: Matches| -> Result<()> {
            for g in &m.flags {
                match g.name() {
                    "one" => {}
                    _ => return Err(g.unhandled()),
                }
            }
            Ok(())
        };
        assert_eq!(
            check_handlers(&T, only_one),
            Err("flag --two has no handler".to_string())
        );
        let both = |m: Matches| -> Result<()> {
            for g in &m.flags {
                match g.name() {
                    "one" => {}
                    "two" => {
                        g.parse::<u32>()?;
                    }
                    _ => return Err(g.unhandled()),
                }
            }
            Ok(())
        };
        assert_eq!(check_handlers(&T, both), Ok(2));
    }

    const FLAGS: &[Flag] = &[
        Flag::new("attempts", "How many attempts")
            .short('n')
            .value("N"),
        Flag::new("quiet", "Say nothing").short('q'),
        Flag::new("jitter", "Jitter kind")
            .value("KIND")
            .choices(&["full", "none"]),
        Flag::new("param", "A parameter")
            .value("NAME=VALUE")
            .repeat(),
    ];
    const TOOL: Tool = Tool {
        name: "elf-test",
        about: "a test",
        usage: &["[OPTIONS] -- COMMAND"],
        flags: FLAGS,
        operands: Operands::StopAtFirst,
        args: &[Operand::one("COMMAND", Kind::Command, "the command")],
        commands: &[],
        exits: crate::exit::SHARED,
        man: "",
        version: "0.0.0",
    };

    fn run(args: &[&str]) -> Result<Matches> {
        match parse(&TOOL, args.iter())? {
            Parsed::Run(m) => Ok(m),
            other => Err(Error::internal(format!("{other:?}"))),
        }
    }

    #[test]
    fn table_is_valid() {
        assert_eq!(check_table(&TOOL), Ok(()));
    }

    #[test]
    fn stops_at_first_operand() {
        let m = run(&["-n3", "-q", "cmd", "-n", "5", "--", "x"]).unwrap_or_default();
        assert_eq!(
            get(&m, "attempts").and_then(|g| g.parse::<u32>().ok()),
            Some(3)
        );
        assert!(has(&m, "quiet"));
        assert_eq!(m.operands, ["cmd", "-n", "5", "--", "x"]);
        let m = run(&["--attempts=4", "--", "-q"]).unwrap_or_default();
        assert_eq!(m.operands, ["-q"]);
    }

    #[test]
    fn help_version_generate_are_values() {
        let p = |a: &[&str]| parse(&TOOL, a.iter());
        assert!(matches!(p(&["-h"]), Ok(Parsed::Help(false))));
        assert!(matches!(p(&["--help"]), Ok(Parsed::Help(true))));
        assert!(matches!(p(&["-V"]), Ok(Parsed::Version)));
        assert!(matches!(
            p(&["--generate", "man"]),
            Ok(Parsed::Generate(Generate::Man))
        ));
        assert!(matches!(
            p(&["--generate=complete-zsh"]),
            Ok(Parsed::Generate(Generate::Zsh))
        ));
    }

    #[test]
    fn bad_usage_is_64_with_the_flag_named() {
        let e = run(&["--nope"]).err().map(|e| (e.code(), e.to_string()));
        assert_eq!(e, Some((64, "unknown flag --nope (see --help)".into())));
        let e = run(&["-n"]).err().map(|e| (e.code(), e.to_string()));
        assert_eq!(e, Some((64, "flag --attempts needs a value (N)".into())));
        let e = run(&["--jitter", "some"]).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("error parsing flag --jitter: invalid value 'some': expected one of full, none")
        );
        let e = run(&["--quiet=yes"]).err().map(|e| e.code());
        assert_eq!(e, Some(64));
        let m = run(&["-n", "x"]).unwrap_or_default();
        let e = get(&m, "attempts").map(|g| g.parse::<u32>().map_err(|e| e.to_string()));
        assert_eq!(
            e,
            Some(Err(
                "error parsing flag --attempts: invalid value 'x': invalid digit found in string"
                    .into()
            ))
        );
    }

    #[test]
    fn repeatable_flags_keep_every_value_and_others_keep_the_last() {
        let m =
            run(&["--param", "a=1", "-n", "1", "--param", "b=2", "-n", "2"]).unwrap_or_default();
        let params: Vec<&str> = all(&m, "param").filter_map(|g| g.str().ok()).collect();
        assert_eq!(params, ["a=1", "b=2"]);
        assert_eq!(all(&m, "attempts").count(), 1);
        assert_eq!(get(&m, "attempts").and_then(|g| g.str().ok()), Some("2"));
    }
}
