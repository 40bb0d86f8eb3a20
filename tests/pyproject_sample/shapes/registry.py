"""A registry opened and closed by a fixture, so setup and teardown run lines of their own."""


class Registry:
    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, name: str) -> None:
        self.names.append(name)

    def close(self) -> int:
        count = len(self.names)
        self.names.clear()
        return count
