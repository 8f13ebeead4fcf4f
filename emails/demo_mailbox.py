"""The bundled demo mailbox: 30 realistic messages covering every classification.

The demo source hands these out a few per sync, in this order, so the first syncs already
show a mix of inquiries, meetings, complaints, follow-ups, spam and everything else.
"""

DEMO_MESSAGES: tuple[dict, ...] = (
    {
        "sender": "John Doe <john.doe@acme-corp.com>",
        "subject": "Question about enterprise pricing",
        "body": """
Hi there,

We're evaluating ReasonFlow for our support team of about 40 people. Could you tell me
how your enterprise pricing works, and whether annual billing comes with a discount?

Thanks,
John
""",
    },
    {
        "sender": "Priya Raman <priya.raman@northwind.io>",
        "subject": "Can we schedule a call next week?",
        "body": """
Hello,

I'd like to schedule a 30-minute call next week to walk through the integration with our
ticketing system. Are you available Tuesday or Wednesday afternoon? Happy to send a calendar
invite once we agree on a slot.

Best,
Priya
""",
    },
    {
        "sender": "Mark Feldman <mark.feldman@globex.com>",
        "subject": "Very disappointed with the outage yesterday",
        "body": """
Hello,

I am very disappointed. Your service was down for three hours yesterday and nobody from your
team told us anything. This is unacceptable for a paid plan. I expect an explanation and a
refund for the downtime.

Mark Feldman
""",
    },
    {
        "sender": "Sarah Kim <sarah.kim@initech.com>",
        "subject": "Re: Proposal for Q3 rollout",
        "reply": True,
        "body": """
Hi,

Just following up on the proposal I sent two weeks ago. Any update on your side? We would
like to lock the Q3 timeline before the end of the month.

Thanks,
Sarah
""",
    },
    {
        "sender": "Prize Department <winner@lucky-draw-prizes.xyz>",
        "subject": "CONGRATULATIONS!!! You are our WINNER",
        "body": """
Dear lucky winner,

You have been selected to receive $1,000,000!!! Click here to claim your prize now.
This is a limited time offer, act now. 100% free, no risk.
""",
    },
    {
        "sender": "Office Manager <office@acme-corp.com>",
        "subject": "Office closed on Friday",
        "body": """
Hi all,

A quick note that the office will be closed this Friday for maintenance work on the
building's heating. The kitchen will be cleaned out on Thursday evening.

Have a nice weekend,
Office team
""",
    },
    {
        "sender": "Luis Ortega <l.ortega@contoso.es>",
        "subject": "Do you support single sign-on?",
        "body": """
Hello,

Do you support SSO with Azure AD or Okta? I would also like to know whether user
provisioning through SCIM is available on the standard plan.

Regards,
Luis
""",
    },
    {
        "sender": "Emma Schultz <emma.schultz@umbrella.de>",
        "subject": "Meeting request: quarterly business review",
        "body": """
Dear team,

I would like to set up a meeting for our quarterly business review. Could we meet on
Thursday at 10:00 CET? Please let me know your availability, or propose another time slot.

Kind regards,
Emma
""",
    },
    {
        "sender": "Tom Becker <tom@beckerlogistics.com>",
        "subject": "Still no answer to my support ticket",
        "body": """
Hello,

This is the third time I'm writing about ticket #4821. The export is still broken and I have
had no answer for a week. Frankly this is the worst support experience I've had, and I'm
frustrated. Please escalate this.

Tom
""",
    },
    {
        "sender": "Anna Novak <anna.novak@vandelay.com>",
        "subject": "Checking in on the contract",
        "body": """
Hi,

Checking in on the contract draft we discussed. I haven't heard back since last Monday — is
there anything you need from us to move forward?

Best,
Anna
""",
    },
    {
        "sender": "Crypto Gains <profits@fast-crypto-returns.top>",
        "subject": "Double your bitcoin in 24 hours",
        "body": """
Guaranteed returns! Invest in our crypto program and double your money in 24 hours.
Click here to start earning. Limited time offer, act now!!!
""",
    },
    {
        "sender": "GitHub <noreply@github.com>",
        "subject": "[reasonflow/notify] Release v1.4.0 published",
        "body": """
A new release v1.4.0 was published in reasonflow/notify.

Highlights: faster event replay, new batch endpoints, documentation updates.
""",
    },
    {
        "sender": "Olivia Brown <olivia.brown@wayneenterprises.com>",
        "subject": "Request for a quote",
        "body": """
Hello,

We are interested in your product for 120 seats. Could you send us a quote, including
onboarding and premium support? We would need the information by the end of next week.

Thank you,
Olivia Brown
Procurement
""",
    },
    {
        "sender": "Kenji Watanabe <kenji.watanabe@stark-industries.jp>",
        "subject": "Availability for a demo?",
        "body": """
Hi,

Our product team would like to see a live demo. Would you be available for a Zoom call on
Monday or Tuesday morning (JST)? Please send over a few time slots that work for you.

Thanks,
Kenji
""",
    },
    {
        "sender": "Rachel Green <rachel.green@centralperk.com>",
        "subject": "Wrong invoice amount — refund needed",
        "body": """
Hello,

We were charged twice for March. I want a refund for the duplicate charge as soon as
possible. This is not acceptable and I am considering cancelling our subscription.

Rachel
""",
    },
    {
        "sender": "David Miller <d.miller@hooli.com>",
        "subject": "Re: Onboarding checklist",
        "reply": True,
        "body": """
Hi again,

Just a friendly reminder about the onboarding checklist you promised to send over. Any
update on when we can expect it?

Cheers,
David
""",
    },
    {
        "sender": "Pharmacy Deals <deals@cheap-meds-online.click>",
        "subject": "Cheap meds, no prescription, 90% OFF",
        "body": """
Best prices on all medication!!! No prescription needed. Click here for 90% off.
Unsubscribe at any time. Act now, limited time only.
""",
    },
    {
        "sender": "Linda Park <linda.park@acme-corp.com>",
        "subject": "Team lunch photos",
        "body": """
Hey everyone,

I uploaded the photos from Thursday's team lunch to the shared drive. Thanks to everyone who
came, it was a lot of fun.

Linda
""",
    },
    {
        "sender": "Ahmed Hassan <ahmed.hassan@oasis-tech.ae>",
        "subject": "How do I export my data?",
        "body": """
Hello,

How do I export all of our historic emails and drafts? Is there an API for that, or could
you point me to the documentation?

Regards,
Ahmed
""",
    },
    {
        "sender": "Sophie Martin <sophie.martin@lumiere.fr>",
        "subject": "Let's meet at the conference",
        "body": """
Bonjour,

I see we'll both be at the Paris SaaS conference. Would you like to meet for a coffee on
the first day? I'm free between 14:00 and 16:00, let me know what time suits you.

Sophie
""",
    },
    {
        "sender": "Greg Wilson <greg.wilson@soylent.com>",
        "subject": "Your app deleted our drafts",
        "body": """
Hi,

After yesterday's update, several of our drafts disappeared. This is a serious problem and
completely unacceptable. We lost a day of work. I need someone to look into this today.

Greg
""",
    },
    {
        "sender": "Maria Rossi <maria.rossi@italdesign.it>",
        "subject": "Following up on the requirements",
        "body": """
Hi,

Following up on our call last Thursday: did you get a chance to look at the requirements
document I sent? I'd love to hear your thoughts.

Grazie,
Maria
""",
    },
    {
        "sender": "Security Alert <security@paypa1-verify.xyz>",
        "subject": "URGENT: verify your account now",
        "body": """
Your account has been suspended!!! Click here to verify your password immediately or your
account will be closed. Act now.
""",
    },
    {
        "sender": "Newsletter <news@saasweekly.com>",
        "subject": "SaaS Weekly #212: pricing pages that convert",
        "body": """
This week: five pricing pages that convert, a deep dive into usage-based billing, and an
interview with the founders of a bootstrapped analytics startup.
""",
    },
    {
        "sender": "Chen Wei <chen.wei@pacificrim.sg>",
        "subject": "Information about data residency",
        "body": """
Hello,

We are a financial services company in Singapore. Could you share information about where
customer data is stored, and whether you offer data residency in Asia?

Best regards,
Chen Wei
""",
    },
    {
        "sender": "Julia Costa <julia.costa@brightpath.br>",
        "subject": "Reschedule our meeting to Friday?",
        "body": """
Hi,

Something came up on Wednesday. Could we move our meeting to Friday at the same time?
If that doesn't work, please suggest another slot and I'll update the calendar invite.

Julia
""",
    },
    {
        "sender": "Peter Jones <peter.jones@dundermifflin.com>",
        "subject": "Terrible experience with your billing team",
        "body": """
Hello,

I have been trying to change our billing address for two weeks. Every time I call, I'm told
someone will get back to me, and nobody does. I am extremely frustrated and this is
unacceptable.

Peter Jones
""",
    },
    {
        "sender": "Nina Petrova <nina.petrova@arcadia.ru>",
        "subject": "Re: Partnership discussion",
        "reply": True,
        "body": """
Hello,

Just circling back on the partnership discussion from last month. Is this still something
you'd like to pursue? Any update would be appreciated.

Nina
""",
    },
    {
        "sender": "Rich Uncle <inheritance@global-fortune.top>",
        "subject": "Inheritance of $4,500,000 awaiting you",
        "body": """
Dear friend, I am a lawyer and you are the beneficiary of an inheritance of $4,500,000.
Reply with your bank details to claim your prize. 100% free and risk free!!!
""",
    },
    {
        "sender": "Calendar <calendar-notification@acme-corp.com>",
        "subject": "Out of office: Alex Turner",
        "body": """
I'm out of the office until Monday with limited access to email. For urgent matters please
contact the support desk.
""",
    },
)
