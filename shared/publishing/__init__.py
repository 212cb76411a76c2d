"""Where Distill's own events go (shared.ports.EventPublisher): an Event Grid topic in Azure (`eventgrid`), webhooks
on one machine (`webhooks`)."""
