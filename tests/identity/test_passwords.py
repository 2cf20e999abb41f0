"""The secrets acrlocal makes for people to type: ``az login -p`` and ``az acr login -p`` (argparse) take a value
that starts with '-' for another option, so none of them may start with one."""

from acrlocal.arm.registries import new_password as new_admin_password
from acrlocal.arm.tokens import new_password as new_token_password
from acrlocal.identity.passwords import check_complexity, generate_password

DRAWS = 2000  # a leading '-' had 1 chance in 64 per draw: 2,000 draws all miss it once in 10^13


def test_the_users_password_meets_the_rule_and_never_starts_with_a_dash() -> None:
    for _ in range(DRAWS):
        password = generate_password()
        check_complexity(password)
        assert not password.startswith("-"), password


def test_admin_and_token_passwords_are_base64_and_never_start_with_a_dash() -> None:
    for _ in range(DRAWS):
        admin, token = new_admin_password(), new_token_password()
        assert len(admin) == 52 and not admin.startswith("-"), admin
        assert not token.startswith("-") and ":" not in token, token
