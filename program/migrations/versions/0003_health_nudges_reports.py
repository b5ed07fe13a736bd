"""Health snapshots, nudge and report payloads, coordinators' notes, dissolutions, match proposals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    # A participant re-matched after a dissolution has a second membership in the same round.
    # 0001 made (round_id, participant_id) unique without naming it: SQLite's batch mode finds it
    # by the naming convention below, PostgreSQL named it <table>_<columns>_key.
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("membership", naming_convention=_NAMES) as batch_op:
            batch_op.drop_constraint("uq_membership_round_id", type_="unique")
            batch_op.create_unique_constraint(
                "uq_membership_partnership_id", ["partnership_id", "participant_id"]
            )
    else:
        op.drop_constraint("membership_round_id_participant_id_key", "membership", type_="unique")
        op.create_unique_constraint(
            "uq_membership_partnership_id", "membership", ["partnership_id", "participant_id"]
        )
    op.create_table(
        "health_snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partnership_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("facts", sa.Text(), server_default="{}", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partnership_id"],
            ["partnership.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("partnership_id", "day"),
    )
    with op.batch_alter_table("health_snapshot", schema=None) as batch_op:
        batch_op.create_index("ix_health_snapshot_day", ["day"], unique=False)

    op.create_table(
        "match_proposal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("partnership_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participant.id"],
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["participant.id"],
        ),
        sa.ForeignKeyConstraint(
            ["partnership_id"],
            ["partnership.id"],
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["round.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("match_proposal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_match_proposal_participant_id"), ["participant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_match_proposal_round_id"), ["round_id"], unique=False)

    op.create_table(
        "partnership_note",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partnership_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partnership_id"],
            ["partnership.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("partnership_note", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_partnership_note_partnership_id"), ["partnership_id"], unique=False
        )

    with op.batch_alter_table("activity", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("detail", sa.String(length=200), nullable=False, server_default="")
        )

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.Text(), nullable=True))

    with op.batch_alter_table("partnership", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("ended_reason", sa.String(length=1000), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("partnership", schema=None) as batch_op:
        batch_op.drop_column("ended_reason")
        batch_op.drop_column("ended_at")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("payload")

    with op.batch_alter_table("activity", schema=None) as batch_op:
        batch_op.drop_column("detail")

    with op.batch_alter_table("partnership_note", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partnership_note_partnership_id"))

    op.drop_table("partnership_note")
    with op.batch_alter_table("match_proposal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_match_proposal_round_id"))
        batch_op.drop_index(batch_op.f("ix_match_proposal_participant_id"))

    op.drop_table("match_proposal")
    with op.batch_alter_table("health_snapshot", schema=None) as batch_op:
        batch_op.drop_index("ix_health_snapshot_day")

    op.drop_table("health_snapshot")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("membership", naming_convention=_NAMES) as batch_op:
            batch_op.drop_constraint("uq_membership_partnership_id", type_="unique")
            batch_op.create_unique_constraint(
                "uq_membership_round_id", ["round_id", "participant_id"]
            )
    else:
        op.drop_constraint("uq_membership_partnership_id", "membership", type_="unique")
        op.create_unique_constraint(
            "membership_round_id_participant_id_key", "membership", ["round_id", "participant_id"]
        )
