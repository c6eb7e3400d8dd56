# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Python tutorial: classes, closures, mutation through methods
# family: tutorial
# models: ElasticNotebook Cornell tutorial / Homework sets (notebook-defined classes and functions)
# stresses: notebook classes, methods reading globals, closures, lambdas, dataclasses, object graphs with cycles, mutation inside calls
# %% [parameters]
N_ACCOUNTS = 20_000
N_TRANSFERS = 300_000
# %% [quick]
N_ACCOUNTS = 200
N_TRANSFERS = 2_000
# %%
import random
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
# %%
FEE = 0.01
random.seed(1234)
# %%
@dataclass
class Account:
    owner: str
    balance: float = 0.0
    history: list = field(default_factory=list)

    def deposit(self, amount):
        self.balance += amount
        self.history.append(("deposit", amount))

    def pay(self, other, amount):
        fee = amount * FEE            # a global read inside a method
        self.balance -= amount + fee
        other.deposit(amount)
        self.history.append(("pay", other.owner, amount))
# %%
class Bank:
    def __init__(self, name):
        self.name = name
        self.accounts = {}
        self.ledger = deque(maxlen=1000)

    def open(self, owner):
        acct = Account(owner)
        acct.bank = self              # a cycle: bank -> account -> bank
        self.accounts[owner] = acct
        return acct

    def total(self):
        return sum(a.balance for a in self.accounts.values())
# %%
bank = Bank("tutorial")
people = [f"user{i}" for i in range(N_ACCOUNTS)]
for p in people:
    bank.open(p).deposit(random.uniform(10, 1000))
# %%
alice = bank.accounts["user0"]      # an alias into the bank
alice.deposit(500)
# %%
def make_counter():
    count = 0
    def incr(step=1):
        nonlocal count
        count += step
        return count
    return incr
# %%
counter = make_counter()
for _ in range(10):
    counter()
# %%
ops = {"double": lambda x: 2 * x, "square": lambda x: x * x}
ops["square"](counter(0))
# %%
for _ in range(N_TRANSFERS):
    src, dst = random.sample(people, 2)
    amt = round(random.uniform(1, 20), 2)
    bank.accounts[src].pay(bank.accounts[dst], amt)
    bank.ledger.append((src, dst, amt))
# %%
total_after = bank.total()
# %%
richest = max(bank.accounts.values(), key=lambda a: a.balance)
richest.owner, round(richest.balance, 2)
# %%
by_decile = defaultdict(list)
for a in bank.accounts.values():
    by_decile[min(int(a.balance // 200), 9)].append(a.owner)
# %%
kinds = Counter(kind for a in bank.accounts.values() for kind, *_ in a.history)
kinds
# %%
FEE = 0.02          # rebinding a global the class method reads
fee_check = alice.balance
alice.pay(bank.accounts["user1"], 10)
fee_paid = fee_check - alice.balance - 10
# %%
round(fee_paid, 4)
