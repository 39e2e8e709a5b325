"""The release lifecycle: approval, promotion, rollback, policy, claims, audit trail, history, git tags."""
