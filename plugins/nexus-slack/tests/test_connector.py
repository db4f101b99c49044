"""The standard connector suite against the Slack simulator: OAuth v2 (team.id, HTTP Basic),
rotating refresh tokens and token_revoked, paging, resume after a kill, deltas (channels and
users by `updated`, messages by `oldest`), 429s, Events API webhooks routed by team_id, health
through auth.test — through the real worker path."""

from nexus_slack.simulator import SlackSimulator

from nexus_core.testing.suite import connector_suite


class SuiteSlackSimulator(SlackSimulator):
    """Slack's tiers on a one-second "minute", small pages: every stream spans pages."""

    minute = 1.0
    list_page_cap = 5

    def install_config(self, account):
        return {**super().install_config(account), "page_size": 10}


TestSlack = connector_suite("slack", simulator=SuiteSlackSimulator)
