"""Registry of the integration methods available to ``solve``, by name.

A method object has ``name``, ``order`` and
``advance(system, params, y, t, h, t_out, next_out, observables, states,
save_state, rtol, atol, max_steps, max_abs_state, stats)``, which runs its
compiled kernel and returns ``(status, t, h, next_out, rejection_reason)``
with the codes of ``common``. A method that integrates only some systems
also has ``check_system(system)``, which raises ``ValueError`` for the others.
"""

from .bdf import BDFMethod
from .exponential import ExponentialMethod
from .radau5 import RadauMethod
from .rodas4 import RODAS4
from .rosenbrock import RosenbrockMethod

METHODS = {
    RODAS4.name: RosenbrockMethod(RODAS4),
    "radau5": RadauMethod(),
    "bdf": BDFMethod(),
    ExponentialMethod.name: ExponentialMethod(),
}
