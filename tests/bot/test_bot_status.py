"""/status: the shop node at a glance for owners, the last backup first."""

from __future__ import annotations

from tests.bot.conftest import Chat, RealNode, bot_settings, running_bot


async def test_status_shows_the_last_backup_and_sync_to_owners(
    empty_node: RealNode, telegram, owner: Chat, staff: Chat
) -> None:
    async for _ in running_bot(bot_settings(empty_node, telegram)):
        before = await owner.send("/status")
        # A backup the node did not schedule itself, put where its backups go.
        backup = empty_node.data_dir / "backups" / "shop-20250518T093000Z.db"
        empty_node.cli("backup", str(backup))
        after = await owner.send("/status")
        refused = await staff.send("/status")

    lines = before.text.splitlines()
    assert lines[0].startswith("My Shop · shopnode ")
    assert lines[1] == "No backup yet, and none scheduled (set [backup] dir and every_hours)."
    assert "Sync: off" in lines and lines[-1].startswith("Database: ")
    size = f"{backup.stat().st_size / 1_000_000:.1f} MB"
    backup_line = after.text.splitlines()[1]
    assert backup_line.startswith("Last backup: ") and backup_line.endswith(
        f"days ago), {size}, shop-20250518T093000Z.db"
    )
    assert refused.text == "Only the shop owner can do that."
