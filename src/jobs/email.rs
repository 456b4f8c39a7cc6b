//! Email when a checkout ends, over SMTP (`DSS_SMTP_URL`, from `DSS_NOTIFICATION_SENDER`):
//! SES and any mail relay speak it.

use crate::bucket::checkout::{CheckoutJob, CheckoutStatus};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Sends the checkout emails.
pub struct Mailer {
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Mailer {
    /// Mail from `sender` through the SMTP server of `url` (`smtp://host:port` in the
    /// clear, `smtp://…?tls=required` for STARTTLS, `smtps://user:password@host` for TLS).
    pub fn new(sender: &str, url: &str) -> Result<Self, String> {
        let from: Mailbox = sender
            .parse()
            .map_err(|e| format!("DSS_NOTIFICATION_SENDER {sender:?}: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("DSS_SMTP_URL: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        Ok(Mailer { from, transport })
    }

    /// Tell `to` how checkout `job` ended.
    pub async fn checkout_ended(&self, to: &str, job: &CheckoutJob, status: &CheckoutStatus) -> Result<(), String> {
        let to: Mailbox = to.parse().map_err(|e| format!("{to:?}: {e}"))?;
        let outcome = match (&status.location, &status.cause) {
            (Some(l), _) => format!("The bundle was copied to {l}."),
            (_, Some(c)) => format!("The checkout failed: {c}"),
            _ => String::new(),
        };
        let body = format!(
            "Checkout {id} of bundle {uuid} version {version} from replica {replica}: {status}.\n\n{outcome}\n",
            id = job.id,
            uuid = job.uuid,
            version = job.version,
            replica = job.replica,
            status = status.status,
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("DSS checkout {}: bundle {}", status.status, job.uuid))
            .body(body)
            .map_err(|e| e.to_string())?;
        self.transport.send(message).await.map(drop).map_err(|e| e.to_string())
    }
}
