//! The emails Roster sends, and the single-use password links some of them carry. No email holds
//! a password; a link's token is written only into the email (the store keeps its hash).

use crate::auth::random_bytes;
use crate::config::Config;
use roster_identity::{Email, FullName, LinkToken, Slug, WorkspaceName};
use roster_store::{LINK_PLACEHOLDER, LinkPurpose, LinkSender, Mail, PasswordLink};
use std::time::Duration;
use tonic::Status;

/// Where the emails send people, and how long their links last.
pub(crate) struct Mails {
    sign_in_url: String,
    set_password_url: String,
    invitation_ttl: Duration,
    reset_ttl: Duration,
}

/// Whom an email is for, in which workspace.
pub(crate) struct Recipient<'a> {
    pub(crate) slug: &'a Slug,
    pub(crate) workspace: &'a WorkspaceName,
    pub(crate) email: &'a Email,
    pub(crate) name: &'a FullName,
}

impl Mails {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            sign_in_url: config.sign_in_url.clone(),
            set_password_url: config.set_password_url.clone(),
            invitation_ttl: Duration::from_secs(config.invitation_ttl_secs),
            reset_ttl: Duration::from_secs(config.reset_ttl_secs),
        }
    }

    /// The welcome email of a user whose password their manager chose: where and as whom to sign
    /// in, never the password.
    pub(crate) fn welcome(&self, to: &Recipient<'_>) -> Mail {
        let Recipient { slug, workspace, email, name } = to;
        Mail {
            to: (*email).clone(),
            subject: format!("Welcome to {workspace} on Roster"),
            body: format!(
                "Hello {name},\n\n\
                 You have been added to the {workspace} workspace on Roster.\n\n\
                 Sign in at: {url}\n\
                 Workspace: {slug}\n\
                 Email: {email}\n\n\
                 Your password is the one your administrator set for you; ask them if you do not have it.\n\
                 You can change it once you are signed in.\n",
                url = self.sign_in_url,
            ),
        }
    }

    /// An invitation: a link to choose a password, then where and as whom to sign in.
    pub(crate) fn invitation(&self, to: &Recipient<'_>, now: i64) -> Result<PasswordLink, Status> {
        let Recipient { slug, workspace, email, name } = to;
        let mail = Mail {
            to: (*email).clone(),
            subject: format!("You are invited to {workspace} on Roster"),
            body: format!(
                "Hello {name},\n\n\
                 You have been invited to the {workspace} workspace on Roster.\n\n\
                 Choose your password here (the link works once, for {valid}):\n\
                 {LINK_PLACEHOLDER}\n\n\
                 Then sign in at: {url}\n\
                 Workspace: {slug}\n\
                 Email: {email}\n",
                valid = spoken(self.invitation_ttl),
                url = self.sign_in_url,
            ),
        };
        self.link(LinkPurpose::Invitation, self.invitation_ttl, mail, now)
    }

    /// A password reset link, asked for by the person or sent by a manager (who signed them out).
    pub(crate) fn reset(&self, to: &Recipient<'_>, sender: LinkSender, now: i64) -> Result<PasswordLink, Status> {
        let Recipient { slug, workspace, email, name } = to;
        let why = match sender {
            LinkSender::Owner => {
                "Someone, hopefully you, asked to reset your password. If it was not you, ignore this email: \
                 your password stays as it is."
            }
            LinkSender::Manager => {
                "An administrator of your workspace asked you to choose a new password, and signed you out \
                 everywhere."
            }
        };
        let mail = Mail {
            to: (*email).clone(),
            subject: format!("Reset your Roster password for {workspace}"),
            body: format!(
                "Hello {name},\n\n\
                 {why}\n\n\
                 Choose a new password here (the link works once, for {valid}):\n\
                 {LINK_PLACEHOLDER}\n\n\
                 Then sign in at: {url}\n\
                 Workspace: {slug}\n\
                 Email: {email}\n",
                valid = spoken(self.reset_ttl),
                url = self.sign_in_url,
            ),
        };
        self.link(LinkPurpose::Reset, self.reset_ttl, mail, now)
    }

    /// A fresh random token, its link, and when it expires.
    fn link(&self, purpose: LinkPurpose, ttl: Duration, mail: Mail, now: i64) -> Result<PasswordLink, Status> {
        let token = LinkToken::from_random(random_bytes()?);
        let base = &self.set_password_url;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}token={}", token.reveal());
        let expires_at = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        Ok(PasswordLink { purpose, token: token.hash(), expires_at, url, mail })
    }
}

/// A duration as an email says it: "7 days", "30 minutes", "1 hour".
fn spoken(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (n, unit) = match secs {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3600 == 0 => (s / 3600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient<'a>(slug: &'a Slug, ws: &'a WorkspaceName, email: &'a Email, name: &'a FullName) -> Recipient<'a> {
        Recipient { slug, workspace: ws, email, name }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(spoken(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(spoken(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(spoken(Duration::from_secs(3600)), "1 hour");
        assert_eq!(spoken(Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn a_link_carries_its_token_once_and_the_body_only_a_placeholder() {
        let mut config = Config::defaults();
        config.set_password_url = "https://inbox.test/welcome?lang=en".into();
        let mails = Mails::new(&config);
        let (slug, ws) = (Slug::parse("acme").unwrap(), WorkspaceName::parse("Acme").unwrap());
        let (email, name) = (Email::parse("ivan@acme.example").unwrap(), FullName::parse("Ivan").unwrap());
        let link = mails.invitation(&recipient(&slug, &ws, &email, &name), 1_000).unwrap();
        let token = link.url.strip_prefix("https://inbox.test/welcome?lang=en&token=").expect("appended");
        assert_eq!(LinkToken::parse(token).unwrap().hash(), link.token);
        assert_eq!(link.expires_at, 1_000 + 7 * 86_400_000);
        assert!(link.mail.body.contains(LINK_PLACEHOLDER) && !link.mail.body.contains(token));
        assert!(!format!("{link:?}").contains(token), "Debug shows no token");
        let reset = mails.reset(&recipient(&slug, &ws, &email, &name), LinkSender::Owner, 0).unwrap();
        assert!(reset.url.contains("?lang=en&token=rpl_") && reset.expires_at == 1_800_000);
        assert_ne!(reset.token, link.token);
    }
}
