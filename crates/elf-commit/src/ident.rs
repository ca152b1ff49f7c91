//! The author and committer of a commit, from git's configuration and environment, as git
//! itself would name them.

use git2::{Config, Signature, Time};

use elf_core::Error;
use elf_core::text::escape;

use crate::message::parse_date;

/// Author and committer identities, loaded once.
pub struct Ident {
    author: Person,
    committer: Person,
}

impl Ident {
    /// Both identities from `cfg` and the environment.
    pub fn load(cfg: &Config) -> Result<Ident, Error> {
        Ok(Ident {
            author: Person::load(cfg, "author")?,
            committer: Person::load(cfg, "committer")?,
        })
    }

    /// The author's and the committer's signatures, dated now unless the environment says
    /// otherwise.
    pub fn signatures(&self) -> Result<(Signature<'static>, Signature<'static>), Error> {
        Ok((self.author.signature()?, self.committer.signature()?))
    }
}

struct Person {
    name: String,
    email: String,
    date: Option<(i64, i32)>,
}

impl Person {
    /// Git's order: `GIT_AUTHOR_NAME`, then `author.name`, then `user.name` (and likewise for
    /// the email, with `EMAIL` last; for the committer, `GIT_COMMITTER_*` and `committer.*`).
    fn load(cfg: &Config, role: &str) -> Result<Person, Error> {
        let upper = role.to_ascii_uppercase();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let conf = |k: &str| cfg.get_string(k).ok().filter(|v| !v.trim().is_empty());
        let name = env(&format!("GIT_{upper}_NAME"))
            .or_else(|| conf(&format!("{role}.name")))
            .or_else(|| conf("user.name"));
        let email = env(&format!("GIT_{upper}_EMAIL"))
            .or_else(|| conf(&format!("{role}.email")))
            .or_else(|| conf("user.email"))
            .or_else(|| env("EMAIL"));
        let (Some(name), Some(email)) = (name, email) else {
            return Err(Error::usage(format!(
                "no {role} identity: set user.name and user.email in git's configuration, \
                 or GIT_{upper}_NAME and GIT_{upper}_EMAIL"
            )));
        };
        let var = format!("GIT_{upper}_DATE");
        let date = match env(&var) {
            None => None,
            Some(v) => Some(parse_date(&v).ok_or_else(|| {
                Error::usage(format!(
                    "{var}={}: expected '@SECONDS +HHMM' or an ISO 8601 date",
                    escape(&v)
                ))
            })?),
        };
        Ok(Person { name, email, date })
    }

    fn signature(&self) -> Result<Signature<'static>, Error> {
        let sig = match self.date {
            Some((secs, offset)) => {
                Signature::new(&self.name, &self.email, &Time::new(secs, offset))
            }
            None => Signature::now(&self.name, &self.email),
        };
        sig.map_err(|e| {
            Error::usage(format!(
                "bad identity {} <{}>: {}",
                escape(&self.name),
                escape(&self.email),
                e.message()
            ))
        })
    }
}
