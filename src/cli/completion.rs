//! Shell completion: the scripts `token-rotator completions SHELL` prints (clap's generator), and
//! the answers the binary gives when kubectl runs it as `kubectl_complete-token_rotator`.
//!
//! kubectl completes a plugin's arguments by running `kubectl_complete-<plugin>` from `PATH`
//! with the words typed after the plugin's name, the last one being the word under the cursor
//! (empty when a new word starts). The answer is one candidate a line (`value\tdescription`),
//! then `:N`, a Cobra directive: 4 (no file completion) or 0 (the shell completes files).

use std::io::Write;

use clap::Command;

/// The Cobra directive that keeps the shell from offering file names.
const NO_FILE_COMPLETION: u8 = 4;
/// The Cobra directive that lets the shell complete file names (a value such as `-f FILE`).
const DEFAULT: u8 = 0;

/// Writes the completion script for `shell`, naming the program `bin_name`.
pub fn write_script(
    shell: clap_complete::Shell,
    command: &mut Command,
    bin_name: &str,
    out: &mut dyn Write,
) {
    clap_complete::generate(shell, command, bin_name, out);
}

/// What kubectl's plugin completion asks for: the candidates for the last of `words` (typed
/// after the plugin's name), and the directive telling the shell whether files may complete it.
/// `command` must be built (`Command::build`), so that clap's own `--help` is among its flags.
pub fn plugin_candidates(command: &Command, words: &[String]) -> (Vec<String>, u8) {
    let (current, typed) = match words.split_last() {
        Some((current, typed)) => (current.as_str(), typed),
        None => ("", &[][..]),
    };
    let mut command = command;
    let mut expects_value = None;
    for word in typed {
        if expects_value.take().is_some() {
            continue;
        }
        if word.starts_with('-') {
            // `--flag value` takes the next word; `--flag=value` and switches do not.
            expects_value =
                option_named(command, word).filter(|a| takes_value(a) && !word.contains('='));
        } else if let Some(sub) = command.find_subcommand(word) {
            command = sub;
        }
    }
    if let Some(arg) = expects_value {
        return values_of(arg, "", current);
    }
    if let Some((flag, value)) = current.split_once('=')
        && let Some(arg) = option_named(command, flag)
    {
        return values_of(arg, &format!("{flag}="), value);
    }
    if current.starts_with('-') {
        return (flags_of(command, current), NO_FILE_COMPLETION);
    }
    if command.has_subcommands() {
        let subcommands = command
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name().starts_with(current))
            .map(|s| candidate(s.get_name(), s.get_about()))
            .collect();
        return (subcommands, NO_FILE_COMPLETION);
    }
    // A positional (a resource name for refresh and authorize): nothing to offer offline.
    (Vec::new(), NO_FILE_COMPLETION)
}

/// Prints `plugin_candidates` in the form kubectl reads.
pub fn write_plugin_candidates(command: &Command, words: &[String], out: &mut dyn Write) {
    let (candidates, directive) = plugin_candidates(command, words);
    for c in candidates {
        let _ = writeln!(out, "{c}");
    }
    let _ = writeln!(out, ":{directive}");
}

fn option_named<'c>(command: &'c Command, word: &str) -> Option<&'c clap::Arg> {
    let name = word.split_once('=').map_or(word, |(n, _)| n);
    command.get_arguments().find(|a| {
        if let Some(long) = name.strip_prefix("--") {
            a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|v| v.contains(&long))
        } else if let Some(short) = name.strip_prefix('-') {
            let mut chars = short.chars();
            matches!((chars.next(), chars.next()), (Some(c), None) if a.get_short() == Some(c))
        } else {
            false
        }
    })
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_action().takes_values()
}

/// An option's values: its fixed choices, or files when it has none (`-f FILE`, a namespace).
fn values_of(arg: &clap::Arg, prefix: &str, current: &str) -> (Vec<String>, u8) {
    let choices: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set() && v.get_name().starts_with(current))
        .map(|v| candidate(&format!("{prefix}{}", v.get_name()), v.get_help()))
        .collect();
    if arg.get_possible_values().is_empty() {
        (Vec::new(), DEFAULT)
    } else {
        (choices, NO_FILE_COMPLETION)
    }
}

fn flags_of(command: &Command, current: &str) -> Vec<String> {
    command
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| (format!("--{l}"), a.get_help())))
        .filter(|(flag, _)| flag.starts_with(current))
        .map(|(flag, help)| candidate(&flag, help))
        .collect()
}

/// `value\tdescription`, the description's first line only (a tab or newline would end it).
fn candidate(value: &str, help: Option<&clap::builder::StyledStr>) -> String {
    match help.map(|h| h.to_string()) {
        Some(h) => {
            let first = h.lines().next().unwrap_or("").replace('\t', " ");
            format!("{value}\t{first}")
        }
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> Command {
        let mut cmd = Command::new("t")
            .subcommand(
                Command::new("status")
                    .about("Rows")
                    .arg(Arg::new("namespace").short('n').long("namespace"))
                    .arg(
                        Arg::new("output")
                            .short('o')
                            .long("output")
                            .value_parser(["table", "json"]),
                    )
                    .arg(
                        Arg::new("all")
                            .short('A')
                            .long("all-namespaces")
                            .action(ArgAction::SetTrue),
                    ),
            )
            .subcommand(Command::new("refresh").about("Now\nand more"));
        cmd.build();
        cmd
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_word_completes_subcommands_with_their_first_help_line() {
        let (c, d) = plugin_candidates(&cli(), &words(&[""]));
        assert_eq!(
            c,
            [
                "status\tRows",
                "refresh\tNow",
                "help\tPrint this message or the help of the given subcommand(s)"
            ]
        );
        assert_eq!(d, NO_FILE_COMPLETION);
        let (c, _) = plugin_candidates(&cli(), &words(&["re"]));
        assert_eq!(c, ["refresh\tNow"]);
    }

    #[test]
    fn flags_values_and_switches() {
        let cmd = cli();
        let (c, _) = plugin_candidates(&cmd, &words(&["status", "--o"]));
        assert_eq!(c, ["--output"]);
        let (c, _) = plugin_candidates(&cmd, &words(&["status", "--h"]));
        assert_eq!(c, ["--help\tPrint help"]);
        let (c, d) = plugin_candidates(&cmd, &words(&["status", "-o", "j"]));
        assert_eq!((c, d), (vec!["json".to_string()], NO_FILE_COMPLETION));
        let (c, _) = plugin_candidates(&cmd, &words(&["status", "--output=t"]));
        assert_eq!(c, ["--output=table"]);
        // A value without choices: the shell's own (files), no candidates of ours.
        let (c, d) = plugin_candidates(&cmd, &words(&["status", "-n", ""]));
        assert_eq!((c.len(), d), (0, DEFAULT));
        // A switch takes no value: the word after it is not its value.
        let (c, d) = plugin_candidates(&cmd, &words(&["status", "-A", "--ou"]));
        assert_eq!((c, d), (vec!["--output".to_string()], NO_FILE_COMPLETION));
    }

    #[test]
    fn no_words_at_all_is_the_first_word() {
        let (c, _) = plugin_candidates(&cli(), &[]);
        assert_eq!(c.len(), 3);
    }
}
