//! Documentation generated from the command line's own definition: shell
//! completions and manual pages.

use super::*;

pub(super) fn print_completions(shell: clap_complete::Shell, cmd: &mut clap::Command) {
    let mut script = Vec::new();
    clap_complete::generate(shell, cmd, "bake", &mut script);
    write_out(format_args!("{}", String::from_utf8_lossy(&script)));
}

/// `bake.1` on stdout, or with `dir`, `bake.1` and a `bake-COMMAND.1` per command there.
pub(super) fn man(cmd: &clap::Command, dir: Option<&Path>) -> Result<(), Failure> {
    let render = |cmd: clap::Command| -> Result<Vec<u8>, Failure> {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(|e| Failure::usage(format!("cannot render the manual page: {e}")))?;
        Ok(page)
    };
    let Some(dir) = dir else {
        let page = render(cmd.clone())?;
        write_out(format_args!("{}", String::from_utf8_lossy(&page)));
        return Ok(());
    };
    let write = |name: &str, page: Vec<u8>| {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
        outln!("{}", path.display());
        Ok::<(), Failure>(())
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
    write("bake", render(cmd.clone())?)?;
    for sub in cmd.get_subcommands() {
        let name = format!("bake-{}", sub.get_name());
        let page = render(sub.clone().name(name.clone()).display_name(name.clone()))?;
        write(&name, page)?;
    }
    Ok(())
}
