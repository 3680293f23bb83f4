export {
  compilePolicies,
  filtersAllow,
  type AccessDecision,
  type AccessRefusal,
  type Flow,
  type Grant,
  type PolicyIndex,
  type PolicyWorld,
} from './evaluate.ts';
export { loadPolicyIndex, loadPolicyWorld } from './load.ts';
